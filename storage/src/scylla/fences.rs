//! Fences on Scylla: a range delete of the log's rows in the fenced seq
//! range, per bucket it crosses. Its tombstone carries a newer client-side
//! timestamp than any write of the earlier writer (a dead process, or one
//! whose lease ended before the fence), so such a write that lands later
//! is shadowed, wherever it arrives from (a coordinator's hint, a late
//! replica). Pointer rows into the range stop counting with their rows. A
//! row per log says which writer fenced it last.

use proto::Seq;

use super::buckets::{bucket_of, to_cql};
use super::bulkhead::Class;
use super::store::ScyllaStore;
use crate::Result;
use crate::model::LogId;

fn kind_and_id(log: &LogId) -> (&'static str, &str) {
    match log {
        LogId::Inbox(user) => ("inbox", user.as_str()),
        LogId::Conversation(conv) => ("conversation", conv.as_str()),
    }
}

impl ScyllaStore {
    pub(crate) async fn fence(
        &self,
        log: &LogId,
        writer: &str,
        after: Seq,
        up_to: Seq,
    ) -> Result<()> {
        let (kind, id) = kind_and_id(log);
        let st = self.statements();
        let last: Option<(Option<String>,)> = self.select_one(&st.log_fence, (kind, id)).await?;
        if last.and_then(|(w,)| w).as_deref() == Some(writer) || up_to <= after {
            return Ok(());
        }
        let (after, up_to) = (to_cql(after)?, to_cql(up_to)?);
        let delete = match log {
            LogId::Inbox(_) => &st.fence_inbox,
            LogId::Conversation(_) => &st.fence_messages,
        };
        for bucket in bucket_of(after + 1)..=bucket_of(up_to) {
            self.execute(Class::Write, delete, (id, bucket, after, up_to))
                .await?;
        }
        self.execute(Class::Write, &st.save_log_fence, (kind, id, writer))
            .await?;
        Ok(())
    }
}
