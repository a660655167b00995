//! Overlapping commits: how a batch written while the one before it is still committing waits
//! for it, so that the journal never holds a batch whose predecessor failed.
//!
//! Each batch in flight has a [`CommitLink`]: a watch of the previous batch's [`BatchStage`]
//! and the sender of its own. A store runs a batch's statements only once the previous batch's
//! statements ran (its row locks are held, so an upsert of the same row waits for it and then
//! sees it), and sends its COMMIT only once the previous batch committed; when the previous one
//! failed, this one is rolled back and fails too. A link dropped before its batch committed
//! (an error, a timeout, a task that ended) reads as failed to the batch after it.

use super::StoreError;
use tokio::sync::watch;

/// How far a batch in flight has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum BatchStage {
    /// Its statements are being sent or run.
    Writing,
    /// Its statements ran in its open transaction; the COMMIT may be on its way.
    Written,
    /// It is durable.
    Committed,
    /// It was rolled back or its outcome is unknown: nothing after it may commit.
    Failed,
}

/// A batch's place in the commit pipeline.
pub struct CommitLink {
    previous: Option<watch::Receiver<BatchStage>>,
    this: watch::Sender<BatchStage>,
}

impl CommitLink {
    /// The link of a batch written after the one `previous` watches (`None`: nothing is in
    /// flight before it), and the watch of this batch for the one after it.
    pub fn after(
        previous: Option<watch::Receiver<BatchStage>>,
    ) -> (CommitLink, watch::Receiver<BatchStage>) {
        let (this, watch) = watch::channel(BatchStage::Writing);
        (CommitLink { previous, this }, watch)
    }

    /// A batch with nothing in flight before it.
    pub fn first() -> CommitLink {
        CommitLink::after(None).0
    }

    /// Whether a batch is in flight before this one.
    pub fn follows_another(&self) -> bool {
        self.previous.is_some()
    }

    /// Waits until the previous batch has reached `stage` (at once without one); an error
    /// when it failed instead.
    pub async fn previous_reached(&mut self, stage: BatchStage) -> Result<(), StoreError> {
        let Some(previous) = self.previous.as_mut() else {
            return Ok(());
        };
        match previous
            .wait_for(|reached| *reached >= stage)
            .await
            .map(|reached| *reached)
        {
            Ok(BatchStage::Failed) | Err(_) => Err(StoreError::Unavailable(
                "the batch before this one did not commit".into(),
            )),
            Ok(_) => Ok(()),
        }
    }

    /// Tells the batch after this one how far this one has come.
    pub fn reached(&self, stage: BatchStage) {
        self.this.send_replace(stage);
    }
}

impl Drop for CommitLink {
    fn drop(&mut self) {
        if *self.this.borrow() != BatchStage::Committed {
            self.this.send_replace(BatchStage::Failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_waits_for_the_previous_stage_and_fails_after_a_failed_one() {
        let (first, watch) = CommitLink::after(None);
        let (mut second, _) = CommitLink::after(Some(watch));
        first.reached(BatchStage::Written);
        second.previous_reached(BatchStage::Written).await.unwrap();
        drop(first);
        assert!(second
            .previous_reached(BatchStage::Committed)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_committed_batch_stays_committed_when_its_link_is_dropped() {
        let (first, watch) = CommitLink::after(None);
        let (mut second, _) = CommitLink::after(Some(watch));
        first.reached(BatchStage::Committed);
        drop(first);
        second
            .previous_reached(BatchStage::Committed)
            .await
            .unwrap();
    }
}
