//! RunInstances' `ClientToken`s: a token names one reservation, so that a
//! client's retry (botocore keeps the token across its retries) gets that
//! reservation instead of more instances.
//!
//! A token is claimed `in_progress` before anything starts and becomes
//! `done` when its request ends with something kept (instances launched,
//! or a launch whose answer was lost); a request that kept nothing deletes
//! it, so that a retry may try again. A repeat while the first request
//! still runs waits for it (at most [`CLIENT_TOKEN_WAIT`]), then is
//! answered `Unavailable`, which botocore retries: never a reservation
//! without its instances. Every change of a token is compare-and-set on
//! the revision read, and each claim carries a random id of its own, so
//! that two requests reusing an expired token cannot both claim it, and a
//! request ends only its own claim. Tokens are bounded per tenant: expired
//! ones go first, then the oldest `done` ones; a token still in progress
//! is never removed unless abandoned ([`CLIENT_TOKEN_IN_PROGRESS_MAX_S`]).

use std::time::Duration;

use nuage_base::Clock;

use crate::error::{Ec2Error, Ec2Result};
use crate::limits::{
    CLIENT_TOKEN_CHARS_MAX, CLIENT_TOKEN_CLAIM_CONFLICTS_MAX, CLIENT_TOKEN_IN_PROGRESS_MAX_S,
    CLIENT_TOKEN_LIFETIME_S, RECORDS_PER_TENANT_MAX,
};
use crate::store::{CLIENT_TOKENS, ClientToken, Records, TokenState};

#[cfg(doc)]
use crate::limits::CLIENT_TOKEN_WAIT;

/// A `ClientToken` seen for the first time (this request's claim), or
/// again, its first request done (its stored name and reservation).
#[derive(Debug)]
pub(crate) enum TokenClaim {
    New(Held),
    Repeat {
        name: String,
        reservation_id: String,
    },
}

/// This request's claim of a token.
#[derive(Debug)]
pub(crate) struct Held {
    pub name: String,
    pub reservation_id: String,
    claim: String,
}

/// The tokens of one tenant.
pub(crate) struct Tokens<'a> {
    pub records: &'a Records,
    pub tenant: &'a str,
    pub clock: &'a dyn Clock,
    /// How long a repeat waits for a request in progress, and how often it
    /// looks.
    pub wait: Duration,
    pub poll: Duration,
}

fn random_hex(bytes: usize) -> String {
    let mut out = String::with_capacity(bytes * 2);
    for _ in 0..bytes {
        let b: u8 = rand::random();
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn busy(message: &str) -> Ec2Error {
    Ec2Error::new(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        message.to_owned(),
    )
}

/// The name a `ClientToken` is stored under (any characters may be in it).
pub(crate) fn token_name(token: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

impl Tokens<'_> {
    fn now_s(&self) -> i64 {
        self.clock.now_unix_ns().div_euclid(1_000_000_000)
    }

    fn expired(&self, t: &ClientToken, now: i64) -> bool {
        now.saturating_sub(t.created_unix_s) > CLIENT_TOKEN_LIFETIME_S
    }

    fn abandoned(&self, t: &ClientToken, now: i64) -> bool {
        t.state == TokenState::InProgress
            && now.saturating_sub(t.created_unix_s) > CLIENT_TOKEN_IN_PROGRESS_MAX_S
    }

    /// Claims `token` for a request whose other parameters digest to
    /// `parameters`, or finds the reservation its first request made:
    /// waits while that request is in progress.
    pub async fn claim(&self, token: &str, parameters: &str) -> Ec2Result<TokenClaim> {
        if token.len() > CLIENT_TOKEN_CHARS_MAX || !token.is_ascii() {
            return Err(Ec2Error::invalid_parameter(format!(
                "ClientToken must be at most {CLIENT_TOKEN_CHARS_MAX} ASCII characters"
            )));
        }
        let name = token_name(token);
        let deadline = tokio::time::Instant::now() + self.wait;
        let mut conflicts = 0u32;
        // Each round either waits one poll (bounded by the deadline) or
        // follows a concurrent change (bounded by the conflicts).
        let rounds = self.wait.as_millis() / self.poll.as_millis().max(1)
            + u128::from(CLIENT_TOKEN_CLAIM_CONFLICTS_MAX)
            + 2;
        for _ in 0..rounds {
            let existing: Option<(ClientToken, u64)> = self
                .records
                .get_revision(CLIENT_TOKENS, self.tenant, &name)
                .await?;
            let now = self.now_s();
            match existing {
                Some((t, revision)) if self.expired(&t, now) || self.abandoned(&t, now) => {
                    // May name a new reservation: removed only as read, so
                    // that of two requests reusing it, one claims it.
                    if !self
                        .records
                        .write_if::<ClientToken>(CLIENT_TOKENS, self.tenant, &name, revision, None)
                        .await?
                    {
                        conflicts += 1;
                    }
                }
                Some((t, _)) if t.parameters != parameters => {
                    return Err(Ec2Error::bad_request(
                        "IdempotentParameterMismatch",
                        "The ClientToken was used before with other parameters",
                    ));
                }
                Some((t, _)) if t.state == TokenState::Done => {
                    return Ok(TokenClaim::Repeat {
                        name,
                        reservation_id: t.reservation_id,
                    });
                }
                Some(_) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if left.is_zero() {
                        return Err(busy(
                            "The request first made with this ClientToken is still running \
                             (copying its image or starting its instances); try again",
                        ));
                    }
                    tokio::time::sleep(self.poll.min(left)).await;
                }
                None => {
                    self.make_room(now).await?;
                    let claim = random_hex(16);
                    let record = ClientToken {
                        name: name.clone(),
                        reservation_id: format!("r-{}", &random_hex(9)[..17]),
                        parameters: parameters.to_owned(),
                        created_unix_s: now,
                        state: TokenState::InProgress,
                        claim: claim.clone(),
                    };
                    if self
                        .records
                        .create(CLIENT_TOKENS, self.tenant, &name, &record)
                        .await?
                    {
                        return Ok(TokenClaim::New(Held {
                            name,
                            reservation_id: record.reservation_id,
                            claim,
                        }));
                    }
                    // The same request, concurrently: look again.
                    conflicts += 1;
                }
            }
            if conflicts > CLIENT_TOKEN_CLAIM_CONFLICTS_MAX {
                break;
            }
        }
        Err(busy(
            "A request with this ClientToken is being answered; try again",
        ))
    }

    /// Keeps the tenant's tokens under [`RECORDS_PER_TENANT_MAX`]: expired
    /// and abandoned ones go, then the oldest done ones; none still in
    /// progress. Each removed only as read.
    async fn make_room(&self, now: i64) -> Ec2Result<()> {
        let mut all: Vec<ClientToken> = self.records.list(CLIENT_TOKENS, self.tenant).await?;
        if all.len() < RECORDS_PER_TENANT_MAX {
            return Ok(());
        }
        all.sort_by_key(|t| t.created_unix_s);
        let mut excess = all.len() + 1 - RECORDS_PER_TENANT_MAX;
        let mut removed = 0;
        for old in &all {
            let stale = self.expired(old, now) || self.abandoned(old, now);
            let oldest_done = excess > 0 && old.state == TokenState::Done;
            if !(stale || oldest_done) {
                continue;
            }
            let Some((current, revision)) = self
                .records
                .get_revision::<ClientToken>(CLIENT_TOKENS, self.tenant, &old.name)
                .await?
            else {
                continue;
            };
            if current != *old {
                continue;
            }
            if self
                .records
                .write_if::<ClientToken>(CLIENT_TOKENS, self.tenant, &old.name, revision, None)
                .await?
            {
                removed += 1;
                excess = excess.saturating_sub(1);
            }
        }
        if all.len() - removed >= RECORDS_PER_TENANT_MAX {
            return Err(busy(&format!(
                "This tenant has {RECORDS_PER_TENANT_MAX} RunInstances with a ClientToken \
                 in progress; try again later"
            )));
        }
        Ok(())
    }

    /// The request that holds `held` kept something: its token now names
    /// the reservation for good.
    pub async fn finish(&self, held: &Held) -> Ec2Result<()> {
        self.end(held, true).await
    }

    /// The request that holds `held` kept nothing: a retry may try again.
    pub async fn release(&self, held: &Held) -> Ec2Result<()> {
        self.end(held, false).await
    }

    async fn end(&self, held: &Held, done: bool) -> Ec2Result<()> {
        for _ in 0..=CLIENT_TOKEN_CLAIM_CONFLICTS_MAX {
            let Some((mut t, revision)) = self
                .records
                .get_revision::<ClientToken>(CLIENT_TOKENS, self.tenant, &held.name)
                .await?
            else {
                return Ok(());
            };
            if t.claim != held.claim {
                // Taken over (it was thought abandoned): not ours to end.
                tracing::warn!(token = %held.name, "a ClientToken was claimed again while its request ran");
                return Ok(());
            }
            t.state = TokenState::Done;
            let value = done.then_some(&t);
            if self
                .records
                .write_if(CLIENT_TOKENS, self.tenant, &held.name, revision, value)
                .await?
            {
                return Ok(());
            }
        }
        Err(busy("the ClientToken changed concurrently; try again"))
    }

    /// Forgets a done token whose reservation has nothing left (its hosts
    /// never started any of its instances): a retry may try again.
    pub async fn forget(&self, name: &str, reservation_id: &str) -> Ec2Result<()> {
        if let Some((t, revision)) = self
            .records
            .get_revision::<ClientToken>(CLIENT_TOKENS, self.tenant, name)
            .await?
            && t.state == TokenState::Done
            && t.reservation_id == reservation_id
        {
            self.records
                .write_if::<ClientToken>(CLIENT_TOKENS, self.tenant, name, revision, None)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    struct TestClock(AtomicI64);

    impl Clock for TestClock {
        fn now_unix_ns(&self) -> i64 {
            self.0.load(Ordering::SeqCst) * 1_000_000_000
        }
    }

    fn store() -> (tempfile::TempDir, Records) {
        let dir = tempfile::tempdir().unwrap();
        let meta = nuage_meta::embedded::EmbeddedMetaStore::open(&dir.path().join("meta")).unwrap();
        (dir, Records::new(Arc::new(meta)))
    }

    /// A document store that can hold a request just after a read: it has
    /// seen the document, and acts on it only once let go.
    struct Interleaved {
        inner: nuage_meta::embedded::EmbeddedMetaStore,
        hold_next: std::sync::atomic::AtomicBool,
        reached: tokio::sync::Notify,
        release: tokio::sync::Notify,
    }

    #[async_trait::async_trait]
    impl nuage_meta::DocumentStore for Interleaved {
        async fn get_document(
            &self,
            namespace: &str,
            key: &str,
        ) -> nuage_meta::MetaResult<Option<nuage_meta::Document>> {
            let doc = self.inner.get_document(namespace, key).await;
            if self.hold_next.swap(false, Ordering::SeqCst) {
                self.reached.notify_one();
                self.release.notified().await;
            }
            doc
        }

        async fn scan_documents(
            &self,
            namespace: &str,
            prefix: &str,
            after: Option<&str>,
            limit: usize,
        ) -> nuage_meta::MetaResult<Vec<nuage_meta::Document>> {
            self.inner
                .scan_documents(namespace, prefix, after, limit)
                .await
        }

        async fn commit_documents(
            &self,
            writes: Vec<nuage_meta::DocumentWrite>,
        ) -> nuage_meta::MetaResult<()> {
            self.inner.commit_documents(writes).await
        }
    }

    fn tokens<'a>(records: &'a Records, clock: &'a TestClock, wait_ms: u64) -> Tokens<'a> {
        Tokens {
            records,
            tenant: "t1",
            clock,
            wait: Duration::from_millis(wait_ms),
            poll: Duration::from_millis(10),
        }
    }

    #[tokio::test]
    async fn a_repeat_waits_for_the_first_request_and_never_gets_an_empty_answer() {
        let (_dir, records) = store();
        let clock = TestClock(AtomicI64::new(1_000));
        let t = tokens(&records, &clock, 50);
        let TokenClaim::New(held) = t.claim("tok", "p").await.unwrap() else {
            panic!("first claim")
        };
        // In progress: the repeat waits, then is told to retry (503).
        let e = t.claim("tok", "p").await.unwrap_err();
        assert_eq!(e.status, http::StatusCode::SERVICE_UNAVAILABLE, "{e:?}");
        // Other parameters: refused at once, as in EC2.
        let e = t.claim("tok", "q").await.unwrap_err();
        assert_eq!(e.code, "IdempotentParameterMismatch");
        // Done: the repeat gets the reservation.
        t.finish(&held).await.unwrap();
        match t.claim("tok", "p").await.unwrap() {
            TokenClaim::Repeat { reservation_id, .. } => {
                assert_eq!(reservation_id, held.reservation_id);
            }
            TokenClaim::New(_) => panic!("a repeat"),
        }
    }

    #[tokio::test]
    async fn a_repeat_waiting_for_a_request_that_failed_claims_anew() {
        let (_dir, records) = store();
        let clock = TestClock(AtomicI64::new(1_000));
        let first = tokens(&records, &clock, 5_000);
        let TokenClaim::New(held) = first.claim("tok", "p").await.unwrap() else {
            panic!("first claim")
        };
        let waiter = async {
            let t = tokens(&records, &clock, 5_000);
            t.claim("tok", "p").await.unwrap()
        };
        let failer = async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            first.release(&held).await.unwrap();
        };
        let (claim, ()) = tokio::join!(waiter, failer);
        match claim {
            TokenClaim::New(again) => assert_ne!(again.claim, held.claim),
            TokenClaim::Repeat { .. } => panic!("nothing was kept: a new claim"),
        }
    }

    #[tokio::test]
    async fn two_requests_reusing_an_expired_token_make_one_reservation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Interleaved {
            inner: nuage_meta::embedded::EmbeddedMetaStore::open(&dir.path().join("meta")).unwrap(),
            hold_next: std::sync::atomic::AtomicBool::new(false),
            reached: tokio::sync::Notify::new(),
            release: tokio::sync::Notify::new(),
        });
        let records = Records::new(Arc::clone(&store) as Arc<dyn nuage_meta::DocumentStore>);
        let clock = TestClock(AtomicI64::new(1_000));
        let t = tokens(&records, &clock, 50);
        let TokenClaim::New(old) = t.claim("tok", "p").await.unwrap() else {
            panic!("first claim")
        };
        t.finish(&old).await.unwrap();
        clock
            .0
            .fetch_add(CLIENT_TOKEN_LIFETIME_S + 1, Ordering::SeqCst);
        // Interleaved: one request reads the expired token, the other
        // reclaims it meanwhile, then the first acts on what it read (an
        // unconditional delete removed the other's new claim and made a
        // second reservation).
        store.hold_next.store(true, Ordering::SeqCst);
        let late = t.claim("tok", "p");
        let early = async {
            store.reached.notified().await;
            let claimed = t.claim("tok", "p").await;
            store.release.notify_one();
            claimed
        };
        let (a, b) = tokio::join!(late, early);
        let outcomes = [a, b];
        let new: Vec<&Held> = outcomes
            .iter()
            .filter_map(|o| match o {
                Ok(TokenClaim::New(h)) => Some(h),
                _ => None,
            })
            .collect();
        assert_eq!(new.len(), 1, "{outcomes:?}");
        assert_ne!(new[0].reservation_id, old.reservation_id);
        // The other one waited for it (in progress) and was told to retry.
        assert!(
            outcomes
                .iter()
                .any(|o| matches!(o, Err(e) if e.status == http::StatusCode::SERVICE_UNAVAILABLE)),
            "{outcomes:?}"
        );
        // A late end of the old claim does not touch the new one.
        t.release(&old).await.unwrap();
        let (stored, _) = records
            .get_revision::<ClientToken>(CLIENT_TOKENS, "t1", &token_name("tok"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.reservation_id, new[0].reservation_id);
        assert_eq!(stored.state, TokenState::InProgress);
    }

    #[tokio::test]
    async fn an_abandoned_claim_may_be_taken_over_and_its_late_end_is_ignored() {
        let (_dir, records) = store();
        let clock = TestClock(AtomicI64::new(1_000));
        let t = tokens(&records, &clock, 50);
        let TokenClaim::New(stale) = t.claim("tok", "p").await.unwrap() else {
            panic!("first claim")
        };
        clock
            .0
            .fetch_add(CLIENT_TOKEN_IN_PROGRESS_MAX_S + 1, Ordering::SeqCst);
        let TokenClaim::New(fresh) = t.claim("tok", "p").await.unwrap() else {
            panic!("an abandoned claim is taken over")
        };
        t.finish(&stale).await.unwrap();
        let (stored, _) = records
            .get_revision::<ClientToken>(CLIENT_TOKENS, "t1", &token_name("tok"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.reservation_id, fresh.reservation_id);
        assert_eq!(stored.state, TokenState::InProgress);
    }

    #[tokio::test]
    async fn tokens_in_progress_are_not_cleaned_up() {
        let (_dir, records) = store();
        let clock = TestClock(AtomicI64::new(1_000));
        let t = tokens(&records, &clock, 20);
        // The tenant's limit, all in progress but one, which is done.
        for i in 0..RECORDS_PER_TENANT_MAX {
            let name = format!("n{i:04}");
            let record = ClientToken {
                name: name.clone(),
                reservation_id: format!("r-{i}"),
                parameters: "p".into(),
                created_unix_s: 900,
                state: if i == 5 {
                    TokenState::Done
                } else {
                    TokenState::InProgress
                },
                claim: "c".into(),
            };
            assert!(
                records
                    .create(CLIENT_TOKENS, "t1", &name, &record)
                    .await
                    .unwrap()
            );
        }
        let TokenClaim::New(_) = t.claim("tok", "p").await.unwrap() else {
            panic!("a new claim")
        };
        let left: Vec<ClientToken> = records.list(CLIENT_TOKENS, "t1").await.unwrap();
        assert_eq!(left.len(), RECORDS_PER_TENANT_MAX);
        assert!(!left.iter().any(|t| t.name == "n0005"), "the done one went");
        // Now all in progress: no room, and none removed.
        let e = t.claim("other", "p").await.unwrap_err();
        assert_eq!(e.status, http::StatusCode::SERVICE_UNAVAILABLE);
        let left: Vec<ClientToken> = records.list(CLIENT_TOKENS, "t1").await.unwrap();
        assert_eq!(left.len(), RECORDS_PER_TENANT_MAX);
    }
}
