//! Conversations and membership: the list, one conversation, groups with a
//! member cap, adding and removing members.

use proto::{ConvId, ConvKind, ProtoError, UserId};
use rand::Rng;
use rand::distr::Alphanumeric;
use storage::ConversationMeta;

use crate::api::Conversation;
use crate::clock::now_ms;
use crate::service::{Core, conv_key};
use crate::{Error, Result};

/// The longest group title, in bytes.
const MAX_TITLE_BYTES: usize = 256;

/// Random group ids tried for one in a shard this instance serves: with
/// one shard of 1,024 held, the chance that all miss is e^-10.
const GROUP_ID_TRIES: usize = 10_240;

impl Core {
    pub(crate) async fn list_conversations(&self, user: &UserId) -> Result<Vec<Conversation>> {
        let ids = self.backends.store.user_conversations(user).await?;
        let mut conversations = Vec::with_capacity(ids.len());
        for conv in ids {
            if let Some(view) = self.view(user, &conv).await? {
                conversations.push(view);
            }
        }
        Ok(conversations)
    }

    pub(crate) async fn get_conversation(
        &self,
        user: &UserId,
        conv: &ConvId,
    ) -> Result<Conversation> {
        self.check_member(user, conv).await?;
        match self.view(user, conv).await? {
            Some(view) => Ok(view),
            // A member of a dm that has no message yet: it exists implicitly.
            None => self.empty_dm_view(conv),
        }
    }

    #[tracing::instrument(skip_all, fields(user = %creator), err(level = "debug", Debug))]
    pub(crate) async fn new_group(
        &self,
        creator: &UserId,
        members: Vec<UserId>,
        title: Option<String>,
    ) -> Result<Conversation> {
        check_title(title.as_deref())?;
        let mut members = members;
        members.push(creator.clone());
        members.sort();
        members.dedup();
        self.check_group_size(members.len())?;
        let conv = self.new_group_id()?;
        let store = &self.backends.store;
        store.add_members(&conv, &members).await?;
        let meta = ConversationMeta {
            conv_id: conv.clone(),
            kind: ConvKind::Group,
            title,
            created_at: now_ms(),
        };
        store.put_conversation(&meta).await?;
        self.view(creator, &conv).await?.ok_or(Error::Forbidden)
    }

    /// A fresh group id in a shard this instance serves, so that any
    /// instance can create a group (and its creator can send at once).
    fn new_group_id(&self) -> Result<ConvId> {
        for _ in 0..GROUP_ID_TRIES {
            let conv = ConvId::group(&random_group_token())?;
            if self.conversations.serves(&conv_key(&conv)) {
                return Ok(conv);
            }
        }
        Err(storage::Error::Unavailable("this instance serves no shard now".into()).into())
    }

    /// Checks the cap and adds as the conversation's writer: no other
    /// membership change (nor a send's member read) comes in between.
    #[tracing::instrument(skip_all, fields(user = %caller, conv = %conv), err(level = "debug", Debug))]
    pub(crate) async fn add_group_members(
        &self,
        caller: &UserId,
        conv: &ConvId,
        new: Vec<UserId>,
    ) -> Result<Conversation> {
        let add = || async {
            let current = self.group_members_for(caller, conv).await?;
            let mut all: Vec<UserId> = current.into_iter().chain(new.iter().cloned()).collect();
            all.sort();
            all.dedup();
            self.check_group_size(all.len())?;
            Ok::<_, Error>(self.backends.store.add_members(conv, &new).await?)
        };
        self.conversations.exclusive(&conv_key(conv), add).await?;
        self.view(caller, conv).await?.ok_or(Error::Forbidden)
    }

    /// Removes as the conversation's writer: a send either read the members
    /// before (and the member gets its message) or after (and does not).
    #[tracing::instrument(skip_all, fields(user = %caller, conv = %conv), err(level = "debug", Debug))]
    pub(crate) async fn remove_group_member(
        &self,
        caller: &UserId,
        conv: &ConvId,
        member: &UserId,
    ) -> Result<Conversation> {
        let remove = || async {
            self.group_members_for(caller, conv).await?;
            Ok::<_, Error>(self.backends.store.remove_member(conv, member).await?)
        };
        self.conversations
            .exclusive(&conv_key(conv), remove)
            .await?;
        self.view(caller, conv).await?.ok_or(Error::Forbidden)
    }

    /// The members of a group the caller belongs to; a dm's members are fixed.
    async fn group_members_for(&self, caller: &UserId, conv: &ConvId) -> Result<Vec<UserId>> {
        self.check_member(caller, conv).await?;
        if conv.kind() == ConvKind::Dm {
            return Err(Error::invalid(
                "conv_id",
                "the members of a direct conversation cannot change",
            ));
        }
        Ok(self.backends.store.members(conv).await?)
    }

    fn check_group_size(&self, members: usize) -> Result<()> {
        let max = self.config.max_group_members;
        if members > max {
            return Err(Error::invalid(
                "members",
                format!("a group has at most {max} members"),
            ));
        }
        Ok(())
    }

    /// The conversation as `caller` sees it, if it exists: with the
    /// caller's read marker and unread count, and in a group every
    /// member's marker.
    async fn view(&self, caller: &UserId, conv: &ConvId) -> Result<Option<Conversation>> {
        let store = &self.backends.store;
        let Some(meta) = store.conversation(conv).await? else {
            return Ok(None);
        };
        let members = store.members(conv).await?;
        let (last_conv_seq, settled) = self.listed_conv_head_settled(conv).await?;
        let reads = self
            .reads(caller, conv, &members, last_conv_seq, settled)
            .await?;
        Ok(Some(Conversation {
            members,
            last_conv_seq,
            read_up_to: reads.read_up_to,
            unread: reads.unread,
            read: (meta.kind == ConvKind::Group).then_some(reads.everyone),
            conv_id: meta.conv_id,
            kind: meta.kind,
            title: meta.title,
        }))
    }

    /// A conversation's visible head where it is served; in a list made
    /// at another replica, the head in the store (it may count a message
    /// whose send is still in flight: history stops below it until then).
    pub(crate) async fn listed_conv_head(&self, conv: &ConvId) -> Result<proto::Seq> {
        Ok(self.listed_conv_head_settled(conv).await?.0)
    }

    /// [`Self::listed_conv_head`], and whether every message up to it is
    /// settled (only where the conversation is served: the store's head may
    /// count a send in flight, with a message below it not written yet).
    pub(crate) async fn listed_conv_head_settled(
        &self,
        conv: &ConvId,
    ) -> Result<(proto::Seq, bool)> {
        if self.conversations.serves(&conv_key(conv)) {
            return Ok((self.visible_conv_head(conv).await?, true));
        }
        Ok((self.backends.store.last_conv_seq(conv).await?, false))
    }

    fn empty_dm_view(&self, conv: &ConvId) -> Result<Conversation> {
        let (a, b) = conv.dm_members().ok_or(Error::Forbidden)?;
        Ok(Conversation {
            conv_id: conv.clone(),
            kind: ConvKind::Dm,
            members: vec![a, b],
            title: None,
            last_conv_seq: 0,
            read_up_to: 0,
            unread: 0,
            read: None,
        })
    }
}

fn check_title(title: Option<&str>) -> Result<()> {
    match title {
        Some(t) if t.len() > MAX_TITLE_BYTES => Err(Error::Invalid(ProtoError::TooLarge {
            what: "title",
            limit: MAX_TITLE_BYTES,
        })),
        _ => Ok(()),
    }
}

fn random_group_token() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(20)
        .map(char::from)
        .collect()
}
