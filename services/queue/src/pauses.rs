//! Pausing and resuming a scope of work (every lane, or a worker's targeted work).
//!
//! The command appends `queue.paused` or `queue.resumed` on the scope's aggregate, expecting
//! its version, then sets every lane consumer on the server to what all the scopes' events
//! say: paused while any scope covering the lane is paused ([`Queue::apply_pauses`]). A lane
//! created while a scope covering it is paused is created paused. Resumed lanes are announced,
//! so claimers look at once. Tasks never move: they wait in their lanes.

use time::OffsetDateTime;
use vibehq_events::pause::{Paused, Resumed, Scope, is_paused};
use vibehq_events::task::lane::Lane;
use vibehq_events::{Actor, Expect, Payload, StreamKind};

use crate::{Error, Queue};

/// Every pause scope's events: `vibehq.queue.pauses.<scope>`.
const PAUSES: &str = "vibehq.queue.pauses.>";

/// A paused scope.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PauseState {
    /// `all` or `worker:<name>`.
    pub scope: String,
    pub paused: bool,
    /// The event's stream sequence (pass as `min_seq` to read the projection back).
    pub sequence: u64,
    /// Lane consumers this command paused or resumed.
    pub lanes_changed: usize,
}

impl Queue {
    /// Holds back the scope's work: no claimer anywhere is handed its lanes' tasks until it
    /// is resumed. 409 if it is paused already.
    pub async fn pause(
        &self,
        scope: &Scope,
        by: &Actor,
        reason: Option<String>,
    ) -> Result<PauseState, Error> {
        let payload = Payload::QueuePaused(Paused {
            scope: scope.to_string(),
            reason,
        });
        self.change_pause(scope, by, payload, true).await
    }

    /// Lets the scope's work flow again (lanes another paused scope covers stay paused).
    pub async fn resume(&self, scope: &Scope, by: &Actor) -> Result<PauseState, Error> {
        let payload = Payload::QueueResumed(Resumed {
            scope: scope.to_string(),
        });
        self.change_pause(scope, by, payload, false).await
    }

    async fn change_pause(
        &self,
        scope: &Scope,
        by: &Actor,
        payload: Payload,
        pause: bool,
    ) -> Result<PauseState, Error> {
        let subject = scope.subject();
        let last = self
            .inner
            .log
            .last(StreamKind::Tasks, &subject.to_string())
            .await?;
        let version = last.as_ref().map_or(0, |l| l.record.sequence);
        let current = last.and_then(|l| l.record.decode().ok()).map(|e| e.payload);
        if is_paused(current.as_ref()) == pause {
            return Err(Error::PauseRefused(format!(
                "{scope} is {} already",
                if pause { "paused" } else { "not paused" }
            )));
        }
        let appended = self
            .inner
            .log
            .append(&by.envelope(payload), Expect::at(version))
            .await
            .map_err(|error| match error {
                vibehq_events::Error::Conflict { .. } => Error::Conflict {
                    task_id: scope.to_string(),
                    reason: "the scope was paused or resumed meanwhile; send it again".into(),
                },
                other => other.into(),
            })?;
        let lanes_changed = self.apply_pauses().await?;
        Ok(PauseState {
            scope: scope.to_string(),
            paused: pause,
            sequence: appended.sequence,
            lanes_changed,
        })
    }

    /// The scopes paused now, as their events say.
    pub async fn paused_scopes(&self) -> Result<Vec<Scope>, Error> {
        let history = self
            .inner
            .log
            .history_of(StreamKind::Tasks, PAUSES, u64::MAX)
            .await?;
        let mut last = std::collections::BTreeMap::new();
        for record in &history {
            if let Ok(event) = record.decode() {
                let scope = match &event.payload {
                    Payload::QueuePaused(p) => &p.scope,
                    Payload::QueueResumed(r) => &r.scope,
                    _ => continue,
                };
                if let Ok(scope) = Scope::parse(scope) {
                    last.insert(scope, is_paused(Some(&event.payload)));
                }
            }
        }
        Ok(last
            .into_iter()
            .filter_map(|(scope, paused)| paused.then_some(scope))
            .collect())
    }

    /// Whether a scope covering `lane` is paused now (for a lane about to be created).
    pub(crate) async fn lane_paused(&self, lane: &Lane) -> Result<bool, Error> {
        for scope in Scope::covering(lane) {
            let last = self
                .inner
                .log
                .last(StreamKind::Tasks, &scope.subject().to_string())
                .await?;
            let payload = last.and_then(|l| l.record.decode().ok()).map(|e| e.payload);
            if is_paused(payload.as_ref()) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Pauses every lane consumer a paused scope covers and resumes every other paused one;
    /// returns how many it changed. Safe to repeat (`vibehq up` does at start).
    pub async fn apply_pauses(&self) -> Result<usize, Error> {
        let paused = self.paused_scopes().await?;
        let resumed = self
            .inner
            .lanes
            .set_paused(|lane| paused.iter().any(|scope| scope.covers(lane)))
            .await?;
        let changed = resumed.changed;
        for lane in resumed.resumed {
            self.inner.lanes.announce(&lane, 1).await;
        }
        Ok(changed)
    }
}

/// How far in the future a paused lane's `pause_until` is: until it is resumed, in effect.
pub(crate) fn until_resumed() -> OffsetDateTime {
    OffsetDateTime::now_utc() + time::Duration::days(365 * 100)
}
