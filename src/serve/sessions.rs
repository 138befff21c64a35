//! The session store: every protocol's interactive sessions in one map,
//! under one memory budget and one idle expiry.
//!
//! A [`SessionSlot`] holds one [`Interactive`] session (image, embeddings,
//! prompts, mask) and the protocol's own per-session state (`extra`, any
//! `Send` type: the protocol downcasts it with [`SessionData::extra_mut`]).
//! Slots are `Arc`s: a request holds its slot while it works, so removing or
//! expiring a session never pulls memory out from under a running request;
//! the memory goes when the last holder drops it.
//!
//! Memory: after each model call, [`SessionStore::enforce_budget`] frees the
//! cached embeddings of the least recently used sessions until their sum is
//! within `--session-memory`. Only embeddings are dropped (a later prompt on
//! that session recomputes them, with the same mask); images, prompts and the
//! model stay. Idle sessions (no request for `--idle-timeout`) are removed
//! whole.

use std::any::Any;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::error::ApiError;
use super::model::Interactive;

/// What a session holds: the segmentation session and the protocol's state.
pub struct SessionData {
    pub session: Box<dyn Interactive>,
    /// The protocol's own state for this session (`()` when it has none).
    pub extra: Box<dyn Any + Send>,
}

impl SessionData {
    pub fn new(session: Box<dyn Interactive>, extra: impl Any + Send) -> Self {
        SessionData {
            session,
            extra: Box::new(extra),
        }
    }

    /// The protocol state as `T`; `None` when this session holds another
    /// type (a session created by another protocol).
    pub fn extra_mut<T: Any>(&mut self) -> Option<&mut T> {
        self.extra.downcast_mut::<T>()
    }
}

/// One session in the store.
pub struct SessionSlot {
    pub id: String,
    /// Which protocol made it ("monai", "nninteractive"): a protocol only
    /// serves its own sessions (see [`SessionStore::get`]).
    pub protocol: &'static str,
    /// Seconds since the Unix epoch at creation.
    pub created_unix: u64,
    data: Mutex<SessionData>,
    last_used_ms: AtomicU64,
}

impl SessionSlot {
    /// Locks the session for a request. Call it inside blocking work (the
    /// lock is held through model calls); a lock poisoned by a panicking
    /// request is taken over, since the session's data stays valid.
    pub fn lock(&self) -> MutexGuard<'_, SessionData> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Limits of the store (from the command line).
#[derive(Clone, Debug)]
pub struct StoreLimits {
    pub max_sessions: usize,
    /// Bytes of cached embeddings summed over sessions.
    pub embedding_budget: usize,
    pub idle: Duration,
}

/// Totals for `/healthz` and the memory tests.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StoreStats {
    pub sessions: usize,
    pub embedding_bytes: usize,
    pub image_bytes: usize,
}

/// All sessions of all protocols.
pub struct SessionStore {
    map: Mutex<HashMap<String, Arc<SessionSlot>>>,
    pub limits: StoreLimits,
    epoch: Instant,
    ids: RandomState,
    counter: AtomicU64,
}

impl SessionStore {
    pub fn new(limits: StoreLimits) -> Self {
        SessionStore {
            map: Mutex::new(HashMap::new()),
            limits,
            epoch: Instant::now(),
            ids: RandomState::new(),
            counter: AtomicU64::new(0),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<SessionSlot>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Map key: protocols have separate id spaces, so one protocol can never
    /// reach or replace another's session by naming its id.
    fn key(protocol: &str, id: &str) -> String {
        format!("{protocol}\u{0}{id}")
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A fresh unguessable id (128 random bits as 32 hex digits): without
    /// `--token`, knowing an id is what gives access to a session.
    pub fn new_id(&self) -> String {
        let mut words = [0u64; 2];
        for w in &mut words {
            // RandomState is seeded from the OS; hashing a counter through
            // it gives independent 64-bit values without a `rand` crate.
            let mut h = self.ids.build_hasher();
            h.write_u64(self.counter.fetch_add(1, Ordering::Relaxed));
            h.write_u128(self.epoch.elapsed().as_nanos());
            *w = h.finish();
        }
        format!("{:016x}{:016x}", words[0], words[1])
    }

    /// Adds a session under `id` (a new id when `None`), replacing a session
    /// of the same id. 503 when `--max-sessions` are open even after idle
    /// ones expired.
    pub fn insert(
        &self,
        protocol: &'static str,
        id: Option<String>,
        data: SessionData,
    ) -> Result<Arc<SessionSlot>, ApiError> {
        self.expire_idle();
        let id = id.unwrap_or_else(|| self.new_id());
        let slot = Arc::new(SessionSlot {
            id: id.clone(),
            protocol,
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            data: Mutex::new(data),
            last_used_ms: AtomicU64::new(self.now_ms()),
        });
        let key = Self::key(protocol, &id);
        let mut map = self.map();
        if !map.contains_key(&key) && map.len() >= self.limits.max_sessions {
            return Err(ApiError::unavailable(format!(
                "the server holds its maximum of {} sessions (--max-sessions); release one or retry later",
                self.limits.max_sessions
            )));
        }
        map.insert(key, slot.clone());
        Ok(slot)
    }

    /// The session `id` of `protocol`, marked as used now; 404 when there is
    /// none (never made, released or expired).
    pub fn get(&self, protocol: &str, id: &str) -> Result<Arc<SessionSlot>, ApiError> {
        let slot = self
            .map()
            .get(&Self::key(protocol, id))
            .cloned()
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "session {:?} not found (never created, released or expired)",
                    truncate(id)
                ))
            })?;
        slot.last_used_ms.store(self.now_ms(), Ordering::Relaxed);
        Ok(slot)
    }

    /// Marks a session as used now (for long requests, at their end).
    pub fn touch(&self, slot: &SessionSlot) {
        slot.last_used_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Removes a session; its memory is freed once no request holds it.
    pub fn remove(&self, protocol: &str, id: &str) -> Option<Arc<SessionSlot>> {
        self.map().remove(&Self::key(protocol, id))
    }

    /// The ids of `protocol`'s sessions.
    pub fn ids(&self, protocol: &str) -> Vec<String> {
        self.map()
            .values()
            .filter(|s| s.protocol == protocol)
            .map(|s| s.id.clone())
            .collect()
    }

    /// Removes sessions idle longer than the limit; returns how many.
    pub fn expire_idle(&self) -> usize {
        let idle = self.limits.idle.as_millis() as u64;
        let now = self.now_ms();
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, s| now.saturating_sub(s.last_used_ms.load(Ordering::Relaxed)) <= idle);
        before - map.len()
    }

    /// Frees the embeddings of the least recently used sessions until the
    /// sum over all sessions is within the budget. `keep` (the session just
    /// used) is freed last. Runs the model-free bookkeeping only: call it
    /// from blocking work after a model call. Sessions locked by a running
    /// request are skipped this time.
    pub fn enforce_budget(&self, keep: Option<&str>) {
        let mut slots: Vec<Arc<SessionSlot>> = self.map().values().cloned().collect();
        slots.sort_by_key(|s| {
            (
                keep == Some(s.id.as_str()),
                s.last_used_ms.load(Ordering::Relaxed),
            )
        });
        let sizes: Vec<Option<usize>> = slots
            .iter()
            .map(|s| s.data.try_lock().ok().map(|d| d.session.embedding_bytes()))
            .collect();
        let mut total: usize = sizes.iter().flatten().sum();
        for (slot, size) in slots.iter().zip(sizes) {
            if total <= self.limits.embedding_budget {
                break;
            }
            let Some(size) = size.filter(|&b| b > 0) else {
                continue;
            };
            if let Ok(mut d) = slot.data.try_lock() {
                d.session.drop_embeddings();
                total -= size;
            }
        }
    }

    /// Totals over the sessions not locked by a running request.
    pub fn stats(&self) -> StoreStats {
        let slots: Vec<Arc<SessionSlot>> = self.map().values().cloned().collect();
        let mut st = StoreStats {
            sessions: slots.len(),
            ..StoreStats::default()
        };
        for s in &slots {
            if let Ok(d) = s.data.try_lock() {
                st.embedding_bytes += d.session.embedding_bytes();
                st.image_bytes += d.session.image_bytes();
            }
        }
        st
    }
}

/// Ids echoed in messages are cut short: a hostile id stays a short line.
fn truncate(id: &str) -> String {
    id.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use segvol::api::Segmentation;
    use segvol::io::nifti::CtVolume;

    /// A session that only has embeddings of a given size.
    struct Fake(usize);

    impl Interactive for Fake {
        fn set_image(&mut self, _: CtVolume) -> segvol::Result<()> {
            Ok(())
        }
        fn add_point(&mut self, _: [f64; 3], _: bool) -> segvol::Result<&Segmentation> {
            unreachable!()
        }
        fn add_box(&mut self, _: [f64; 6]) -> segvol::Result<&Segmentation> {
            unreachable!()
        }
        fn add_text(&mut self, _: &str) -> segvol::Result<&Segmentation> {
            unreachable!()
        }
        fn set_prompts(
            &mut self,
            _: Option<&str>,
            _: Option<[f64; 6]>,
            _: &[([f64; 3], bool)],
        ) -> segvol::Result<&Segmentation> {
            unreachable!()
        }
        fn reset(&mut self) {}
        fn mask(&self) -> Option<&Segmentation> {
            None
        }
        fn embedding_bytes(&self) -> usize {
            self.0
        }
        fn drop_embeddings(&mut self) {
            self.0 = 0;
        }
        fn image_bytes(&self) -> usize {
            0
        }
    }

    fn store(max_sessions: usize, budget: usize, idle_ms: u64) -> SessionStore {
        SessionStore::new(StoreLimits {
            max_sessions,
            embedding_budget: budget,
            idle: Duration::from_millis(idle_ms),
        })
    }

    fn add(s: &SessionStore, id: &str, bytes: usize) {
        s.insert(
            "p",
            Some(id.into()),
            SessionData::new(Box::new(Fake(bytes)), ()),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(3));
    }

    #[test]
    fn the_least_recently_used_embeddings_go_first() {
        let s = store(10, 250, 60_000);
        for id in ["a", "b", "c"] {
            add(&s, id, 100);
        }
        s.get("p", "a").unwrap(); // a is now the most recent
        s.enforce_budget(Some("c"));
        let bytes = |id| s.get("p", id).unwrap().lock().session.embedding_bytes();
        // b was least recently used; freeing it alone meets the budget.
        assert_eq!((bytes("a"), bytes("b"), bytes("c")), (100, 0, 100));
        assert_eq!(s.stats().sessions, 3);
    }

    #[test]
    fn the_session_in_use_is_freed_last() {
        let s = store(10, 50, 60_000);
        add(&s, "old", 100);
        add(&s, "new", 100);
        s.enforce_budget(Some("old"));
        assert_eq!(s.stats().embedding_bytes, 0);
        let s = store(10, 150, 60_000);
        add(&s, "old", 100);
        add(&s, "new", 100);
        s.enforce_budget(Some("old"));
        let bytes = |id| s.get("p", id).unwrap().lock().session.embedding_bytes();
        assert_eq!((bytes("old"), bytes("new")), (100, 0));
    }

    #[test]
    fn full_store_refuses_and_idle_sessions_expire() {
        let s = store(2, usize::MAX, 60);
        add(&s, "a", 1);
        add(&s, "b", 1);
        let err = s
            .insert("p", None, SessionData::new(Box::new(Fake(1)), ()))
            .err()
            .unwrap();
        assert_eq!(err.status.as_u16(), 503);
        // Replacing an id is not a new session.
        add(&s, "a", 1);
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(s.expire_idle(), 2);
        assert!(s.get("p", "a").is_err());
        add(&s, "c", 1);
    }

    #[test]
    fn protocols_have_separate_ids() {
        let s = store(10, usize::MAX, 60_000);
        add(&s, "x", 1);
        assert!(s.get("other", "x").is_err());
        assert!(s.remove("other", "x").is_none());
        s.insert(
            "other",
            Some("x".into()),
            SessionData::new(Box::new(Fake(7)), ()),
        )
        .unwrap();
        assert_eq!(s.get("p", "x").unwrap().lock().session.embedding_bytes(), 1);
        assert_eq!(s.ids("p"), ["x"]);
    }
}
