//! One loaded PKCS#11 library (PKCS#11 v2.40 §5.4 C_Initialize is per
//! library and process), its tokens, and a bounded pool of logged-in
//! sessions per token.
//!
//! Sessions: PKCS#11 runs one operation at a time per session (§5.7), so one
//! shared session would serialise every enrolment. Each token keeps up to
//! `max_sessions` read-only user sessions; an operation borrows one, and
//! waits (bounded) when all are lent. Logging in is per application and
//! token (§5.6): a second C_Login answers CKR_USER_ALREADY_LOGGED_IN, which
//! is success here.
//!
//! Recovery: an error code meaning that the token, the session or the
//! library state is gone (see [`is_gone`]) marks the module broken and is
//! reported as [`Pkcs11Error::Unavailable`] (503 to clients). The next
//! operation, once no session is lent and at most once per
//! [`RETRY_INTERVAL`], finalizes the library, initializes it again, finds the
//! token again and reopens sessions: a token that comes back (or a network
//! HSM that reconnects) serves again without a restart.

use super::{PinSource, Pkcs11Error, TokenSelector};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Sessions per token unless the operator sets `pkcs11.max_sessions`.
pub const DEFAULT_MAX_SESSIONS: usize = 8;
/// How long an operation waits for a session when all are lent.
pub const SESSION_WAIT: Duration = Duration::from_secs(5);
/// Minimum time between two re-initialisations of a broken module.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// Whether a PKCS#11 error means the token, the session or the library
/// state is gone (so the module must be re-initialised), as opposed to a
/// refusal of this one operation.
pub(crate) fn is_gone(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::DeviceMemory
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::SessionCount
                | RvError::CryptokiNotInitialized
                | RvError::SlotIdInvalid
                | RvError::UserNotLoggedIn
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid,
            _
        )
    )
}

/// A loaded PKCS#11 library, shared by every key that names it.
pub(crate) struct Module {
    path: PathBuf,
    max_sessions: usize,
    state: Mutex<State>,
    returned: Condvar,
    failures: AtomicU64,
}

struct State {
    ctx: Option<Pkcs11>,
    /// Incremented by each (re-)initialisation; object handles and sessions
    /// belong to one generation.
    generation: u64,
    /// Why the module is broken, until the next successful re-initialisation.
    broken: Option<String>,
    last_init: Instant,
    pools: Vec<Pool>,
    lent: usize,
}

struct Pool {
    selector: TokenSelector,
    slot: Option<Slot>,
    idle: Vec<Session>,
    open: usize,
}

/// A borrowed session: where it comes from, for its return.
pub(crate) struct Lent {
    session: Option<Session>,
    pool: usize,
    generation: u64,
    /// The token's slot in this generation.
    pub(crate) slot: Slot,
}

impl Lent {
    /// The session (present until returned).
    pub(crate) fn session(&self) -> Result<&Session, Pkcs11Error> {
        self.session.as_ref().ok_or_else(|| Pkcs11Error::Failed("session already returned".into()))
    }

    /// The generation the session belongs to.
    pub(crate) const fn generation(&self) -> u64 {
        self.generation
    }
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<Module>>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Weak<Module>>>> = OnceLock::new();
    MODULES.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn load(path: &Path) -> Result<Pkcs11, Pkcs11Error> {
    let ctx = Pkcs11::new(path).map_err(|e| Pkcs11Error::Module(format!("{}: cannot load: {e}", path.display())))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
        Err(e) => Err(Pkcs11Error::Module(format!("{}: C_Initialize failed: {e}", path.display()))),
    }
}

impl Module {
    /// The module for the library at `path`, loading and initialising it on
    /// first use; later callers share it (and its pools).
    pub(crate) fn get(path: &Path, max_sessions: usize) -> Result<Arc<Self>, Pkcs11Error> {
        let mut modules = lock(registry());
        if let Some(m) = modules.get(path).and_then(Weak::upgrade) {
            return Ok(m);
        }
        let ctx = load(path)?;
        let module = Arc::new(Self {
            path: path.to_path_buf(),
            max_sessions: max_sessions.max(1),
            state: Mutex::new(State {
                ctx: Some(ctx),
                generation: 1,
                broken: None,
                last_init: Instant::now(),
                pools: Vec::new(),
                lent: 0,
            }),
            returned: Condvar::new(),
            failures: AtomicU64::new(0),
        });
        modules.retain(|_, w| w.strong_count() > 0);
        modules.insert(path.to_path_buf(), Arc::downgrade(&module));
        Ok(module)
    }

    /// Sessions currently open on the token `selector` names.
    pub(crate) fn open_sessions(&self, selector: &TokenSelector) -> usize {
        lock(&self.state).pools.iter().find(|p| &p.selector == selector).map_or(0, |p| p.open)
    }

    /// How many operations failed because the token or library was gone.
    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Whether the module is currently known to be broken.
    pub(crate) fn broken(&self) -> Option<String> {
        lock(&self.state).broken.clone()
    }

    /// Borrows a logged-in session on the token `selector` names.
    pub(crate) fn borrow(&self, selector: &TokenSelector, pin: &PinSource) -> Result<Lent, Pkcs11Error> {
        let deadline = Instant::now() + SESSION_WAIT;
        let mut st = lock(&self.state);
        loop {
            if let Some(why) = st.broken.clone() {
                if st.lent > 0 || st.last_init.elapsed() < RETRY_INTERVAL {
                    return Err(Pkcs11Error::Unavailable(why));
                }
                self.reinitialise(&mut st)?;
            }
            let pool = match st.pools.iter().position(|p| &p.selector == selector) {
                Some(i) => i,
                None => {
                    st.pools.push(Pool { selector: selector.clone(), slot: None, idle: Vec::new(), open: 0 });
                    st.pools.len() - 1
                }
            };
            let slot = match st.pools.get(pool).and_then(|p| p.slot) {
                Some(s) => s,
                None => {
                    let s = self.find_slot(&st, selector).inspect_err(|e| self.note_failure(&mut st, e))?;
                    if let Some(p) = st.pools.get_mut(pool) {
                        p.slot = Some(s);
                    }
                    s
                }
            };
            let generation = st.generation;
            let Some(p) = st.pools.get_mut(pool) else { return Err(Pkcs11Error::Failed("pool vanished".into())) };
            if let Some(session) = p.idle.pop() {
                st.lent += 1;
                return Ok(Lent { session: Some(session), pool, generation, slot });
            }
            if p.open < self.max_sessions {
                let session = self.open_session(&st, slot, pin).inspect_err(|e| self.note_failure(&mut st, e))?;
                if let Some(p) = st.pools.get_mut(pool) {
                    p.open += 1;
                }
                st.lent += 1;
                return Ok(Lent { session: Some(session), pool, generation, slot });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Pkcs11Error::Unavailable(format!(
                    "all {} sessions on {} stayed busy for {}s",
                    self.max_sessions,
                    selector.describe(),
                    SESSION_WAIT.as_secs()
                )));
            }
            st = self.returned.wait_timeout(st, deadline - now).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
    }

    /// Returns a session after an operation; `gone` is the reason when the
    /// operation failed because the token or library is gone ([`is_gone`]),
    /// which breaks the module.
    pub(crate) fn give_back(&self, mut lent: Lent, gone: Option<String>) {
        let mut st = lock(&self.state);
        st.lent = st.lent.saturating_sub(1);
        let session = lent.session.take();
        if let Some(why) = gone {
            self.break_module(&mut st, why);
        }
        let same_generation = lent.generation == st.generation;
        let healthy = st.broken.is_none();
        if let (true, Some(p)) = (same_generation, st.pools.get_mut(lent.pool)) {
            if healthy {
                p.idle.extend(session);
            } else {
                p.open = p.open.saturating_sub(1);
            }
        }
        drop(st);
        self.returned.notify_one();
    }

    /// The mechanisms the token in `slot` offers (empty when it cannot say).
    pub(crate) fn mechanisms(&self, slot: Slot) -> Vec<cryptoki::mechanism::MechanismType> {
        let st = lock(&self.state);
        st.ctx.as_ref().and_then(|c| c.get_mechanism_list(slot).ok()).unwrap_or_default()
    }

    fn note_failure(&self, st: &mut State, e: &Pkcs11Error) {
        if let Pkcs11Error::Unavailable(why) = e {
            self.break_module(st, why.clone());
        }
    }

    fn break_module(&self, st: &mut State, why: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if st.broken.is_none() {
            tracing::error!(target: "scepd::pkcs11", module = %self.path.display(), error = %why,
                "PKCS#11 token unavailable: answering 503 until it is back");
            st.broken = Some(why);
        }
        for p in &mut st.pools {
            p.idle.clear();
            p.open = 0;
            p.slot = None;
        }
    }

    /// Finalizes and initialises the library again (the caller holds the
    /// lock and no session is lent).
    fn reinitialise(&self, st: &mut State) -> Result<(), Pkcs11Error> {
        st.last_init = Instant::now();
        for p in &mut st.pools {
            p.idle.clear();
            p.open = 0;
            p.slot = None;
        }
        if let Some(old) = st.ctx.take() {
            // Errors are moot: the state is being discarded.
            let _ = old.finalize();
        }
        match load(&self.path) {
            Ok(ctx) => {
                st.ctx = Some(ctx);
                st.generation += 1;
                st.broken = None;
                tracing::info!(target: "scepd::pkcs11", module = %self.path.display(), "PKCS#11 module initialised again");
                Ok(())
            }
            Err(e) => {
                st.broken = Some(e.to_string());
                Err(Pkcs11Error::Unavailable(e.to_string()))
            }
        }
    }

    fn ctx<'s>(&self, st: &'s State) -> Result<&'s Pkcs11, Pkcs11Error> {
        st.ctx.as_ref().ok_or_else(|| Pkcs11Error::Unavailable(format!("{}: not initialised", self.path.display())))
    }

    /// The slot holding the token `selector` names.
    fn find_slot(&self, st: &State, selector: &TokenSelector) -> Result<Slot, Pkcs11Error> {
        let ctx = self.ctx(st)?;
        let gone = |e: CkError| Pkcs11Error::Unavailable(format!("{}: {e}", self.path.display()));
        let mut seen = Vec::new();
        let mut found = Vec::new();
        for slot in ctx.get_slots_with_initialized_token().map_err(gone)? {
            let info = match ctx.get_token_info(slot) {
                Ok(i) => i,
                Err(e) if is_gone(&e) => continue,
                Err(e) => return Err(gone(e)),
            };
            seen.push(format!("{:?} (slot {})", info.label().trim_end(), slot.id()));
            if selector.matches(slot.id(), info.label(), info.serial_number(), info.manufacturer_id(), info.model()) {
                found.push(slot);
            }
        }
        match found.as_slice() {
            [slot] => Ok(*slot),
            [] => Err(Pkcs11Error::Unavailable(format!(
                "no token matches {} in {} (tokens present: {})",
                selector.describe(),
                self.path.display(),
                if seen.is_empty() { "none".to_owned() } else { seen.join(", ") }
            ))),
            _ => Err(Pkcs11Error::NotFound(format!(
                "{} matches {} tokens in {} ({}): add token= or serial= to the URI",
                selector.describe(),
                found.len(),
                self.path.display(),
                seen.join(", ")
            ))),
        }
    }

    fn open_session(&self, st: &State, slot: Slot, pin: &PinSource) -> Result<Session, Pkcs11Error> {
        let ctx = self.ctx(st)?;
        let session = ctx.open_ro_session(slot).map_err(|e| {
            if is_gone(&e) {
                Pkcs11Error::Unavailable(format!("{}: C_OpenSession: {e}", self.path.display()))
            } else {
                Pkcs11Error::Failed(format!("{}: C_OpenSession: {e}", self.path.display()))
            }
        })?;
        let secret = pin.read()?;
        match session.login(UserType::User, Some(&secret)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(CkError::Pkcs11(
                rv @ (RvError::PinIncorrect
                | RvError::PinLenRange
                | RvError::PinLocked
                | RvError::PinExpired
                | RvError::PinInvalid),
                _,
            )) => Err(Pkcs11Error::Pin { source: pin.clone(), reason: format!("the token refused the PIN ({rv})") }),
            Err(e) if is_gone(&e) => Err(Pkcs11Error::Unavailable(format!("{}: C_Login: {e}", self.path.display()))),
            Err(e) => Err(Pkcs11Error::Failed(format!("{}: C_Login: {e}", self.path.display()))),
        }
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        st.pools.clear();
        if let Some(ctx) = st.ctx.take() {
            let _ = ctx.finalize();
        }
    }
}
