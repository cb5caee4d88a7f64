//! A team of spinning worker threads for one inference split over several cores. A layer at
//! batch 1 lasts 20 µs to 2 ms; rayon's workers fall asleep between layers after a few
//! microseconds, and waking a sleeping thread costs tens of microseconds on a virtual machine,
//! paid once or twice per layer. A `Team`'s helpers instead spin while an inference is in
//! progress (`Team::enter`), so handing them a layer's units of work costs a few atomic
//! operations, and they sleep as soon as the inference ends, leaving the cores to whatever
//! runs next. Kernels call [`parallel_for`], which uses the team of the calling thread when
//! there is one, the current rayon pool otherwise (tests of single kernels).

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use rayon::prelude::*;

/// While alive, this thread's floating-point unit flushes denormal results to zero and reads
/// denormal inputs as zero (x86 MXCSR FTZ and DAZ), as inference engines run: a multiply-add
/// on a denormal takes a microcode assist of ~100 cycles, and a few hundred denormal
/// activations (a layer norm's output) made every later layer of MiniLM twice as slow. The
/// previous mode comes back on drop.
pub struct FlushDenormals {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);

impl FlushDenormals {
    pub fn new() -> FlushDenormals {
        #[cfg(target_arch = "x86_64")]
        {
            let saved = read_mxcsr();
            write_mxcsr(saved | FTZ_DAZ);
            FlushDenormals { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        FlushDenormals {}
    }
}

impl Default for FlushDenormals {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        write_mxcsr(self.saved);
    }
}

#[cfg(target_arch = "x86_64")]
fn read_mxcsr() -> u32 {
    let mut v = 0u32;
    // SAFETY: stores the 32-bit MXCSR register into `v`, which lives for the instruction.
    unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack)) };
    v
}

#[cfg(target_arch = "x86_64")]
fn write_mxcsr(v: u32) {
    // SAFETY: loads a valid MXCSR value (read from the register, with only the FTZ and DAZ
    // mode bits changed); it changes this thread's rounding of denormals, nothing else.
    unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &v, options(nostack, readonly)) };
}

/// One parallel loop: `units` calls of `work`, each index once, on whichever thread takes it.
struct Job<'a> {
    units: usize,
    work: &'a (dyn Fn(usize) + Sync),
}

/// What the team's threads share.
struct Shared {
    /// Bumped once per job; helpers run a job when they see it change.
    epoch: AtomicU64,
    /// The current job (a `Job` on the stack of the thread in `Team::run`).
    job: AtomicPtr<()>,
    /// Per member (0 the calling thread, then the helpers): the next unit of its share of the
    /// current job, each on its own cache line. Member `m` owns units `m·n/T .. (m+1)·n/T`
    /// and takes them in order, then takes what is left of the others' shares: consecutive
    /// units (neighbouring rows, pixels) stay on one core, whose cache holds their inputs and
    /// keeps their outputs for the next layer, while a slow core's share is still finished
    /// by the others.
    next: Vec<Slot>,
    /// Helpers that have not finished the current job.
    active: AtomicUsize,
    /// Whether an inference is in progress (helpers spin) or not (helpers sleep).
    busy: AtomicBool,
    stop: AtomicBool,
    /// A unit of work panicked on a helper.
    panicked: AtomicBool,
    sleep: Mutex<()>,
    wake: Condvar,
}

/// Helper threads (the calling thread is the team's other member) and their shared state.
pub struct Team {
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
}

thread_local! {
    /// The team of the inference this thread is running (set by `Team::enter`).
    static CURRENT: Cell<*const Team> = const { Cell::new(std::ptr::null()) };
    /// Whether this thread is running a unit of a team's job: loops inside it run serially.
    static IN_JOB: Cell<bool> = const { Cell::new(false) };
}

impl Team {
    /// A team of `threads` threads: this one and `threads - 1` helpers.
    pub fn new(threads: usize) -> std::io::Result<Team> {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            next: (0..threads.max(1)).map(|_| Slot::default()).collect(),
            active: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut helpers = Vec::new();
        for i in 1..threads.max(1) {
            let s = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("secateur-team-{i}"))
                .spawn(move || helper(&s, i));
            match handle {
                Ok(h) => helpers.push(h),
                Err(e) => {
                    // the helpers already started must not outlive the failed team
                    drop(Team { shared, helpers });
                    return Err(e);
                }
            }
        }
        Ok(Team { shared, helpers })
    }

    /// Threads in the team, the calling one included.
    pub fn threads(&self) -> usize {
        self.helpers.len() + 1
    }

    /// Runs `body` (one inference) with the helpers spinning, ready for the loops of
    /// [`parallel_for`] called from it on this thread; they go back to sleep afterwards.
    pub fn enter<R>(&self, body: impl FnOnce() -> R) -> R {
        self.shared.busy.store(true, Ordering::SeqCst);
        self.notify();
        let previous = CURRENT.with(|c| c.replace(self as *const Team));
        // restores the state even when `body` panics
        struct Leave<'a>(&'a Shared, *const Team);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.1));
                self.0.busy.store(false, Ordering::SeqCst);
            }
        }
        let _leave = Leave(&self.shared, previous);
        body()
    }

    fn notify(&self) {
        let _guard = self.shared.sleep.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.wake.notify_all();
    }

    /// Calls `work(i)` for every `i < units`, spread over the team; returns when all are done.
    fn run(&self, units: usize, work: &(dyn Fn(usize) + Sync)) {
        let job = Job { units, work };
        let s = &*self.shared;
        s.job
            .store((&job as *const Job).cast_mut().cast(), Ordering::Relaxed);
        let members = s.next.len();
        for (m, slot) in s.next.iter().enumerate() {
            slot.0.store(units * m / members, Ordering::Relaxed);
        }
        s.active.store(self.helpers.len(), Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if !s.busy.load(Ordering::Relaxed) {
            self.notify();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| take_units(s, &job, 0)));
        // the job lives on this stack: no helper may still hold it when this returns
        while s.active.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
        let theirs = s.panicked.swap(false, Ordering::SeqCst);
        if let Err(payload) = mine {
            std::panic::resume_unwind(payload);
        }
        if theirs {
            panic!("a unit of parallel work panicked on a helper thread");
        }
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.notify();
        for h in self.helpers.drain(..) {
            let _ = h.join();
        }
    }
}

/// Takes units of `job` until none are left: member `me`'s share first, then the others'.
fn take_units(s: &Shared, job: &Job, me: usize) {
    // restores the flag even when a unit panics
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            IN_JOB.with(|f| f.set(self.0));
        }
    }
    let _restore = Restore(IN_JOB.with(|f| f.replace(true)));
    let members = s.next.len();
    for m in (0..members).map(|k| (me + k) % members) {
        let end = job.units * (m + 1) / members;
        loop {
            let i = s.next[m].0.fetch_add(1, Ordering::Relaxed);
            if i >= end {
                break;
            }
            (job.work)(i);
        }
    }
}

/// An atomic counter alone on its cache line (two members' counters on one line would make
/// every take a cross-core transfer).
#[derive(Default)]
#[repr(align(128))]
struct Slot(AtomicUsize);

/// A helper's life: wait for a job (spinning while the team is busy, asleep otherwise), take
/// its units, report done.
fn helper(s: &Shared, me: usize) {
    let _flush = FlushDenormals::new();
    let mut seen = 0u64;
    let mut spins = 0u32;
    loop {
        loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            if s.busy.load(Ordering::Acquire) {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(64) {
                    // lets another runnable thread of this core (a rayon worker of the same
                    // inference) have it
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            let guard = s.sleep.lock().unwrap_or_else(|e| e.into_inner());
            let idle = |_: &mut ()| {
                s.epoch.load(Ordering::Acquire) == seen
                    && !s.busy.load(Ordering::Acquire)
                    && !s.stop.load(Ordering::Acquire)
            };
            drop(s.wake.wait_while(guard, idle));
        }
        // SAFETY: the job's owner stored it before bumping the epoch and waits for `active`
        // to reach zero, which this helper's decrement below is part of, before dropping it.
        let job = unsafe { &*s.job.load(Ordering::Relaxed).cast::<Job>() };
        if catch_unwind(AssertUnwindSafe(|| take_units(s, job, me))).is_err() {
            s.panicked.store(true, Ordering::SeqCst);
        }
        s.active.fetch_sub(1, Ordering::Release);
    }
}

/// Threads of the team running on this thread's inference (1 outside any).
pub fn available_threads() -> usize {
    let team = CURRENT.with(|c| c.get());
    if team.is_null() || IN_JOB.with(|f| f.get()) {
        1
    } else {
        // SAFETY: CURRENT is set only inside `Team::enter`, which outlives this call.
        unsafe { &*team }.threads()
    }
}

/// Calls `work(i)` for every `i < units`, on `threads` threads when `threads > 1`: the calling
/// thread's team when it runs an inference of one, else the current rayon pool. Serial inside
/// a unit of another parallel loop.
pub fn parallel_for(threads: usize, units: usize, work: impl Fn(usize) + Sync) {
    if threads <= 1 || units <= 1 || IN_JOB.with(|f| f.get()) {
        (0..units).for_each(work);
        return;
    }
    let team = CURRENT.with(|c| c.get());
    if team.is_null() {
        (0..units).into_par_iter().for_each(&work);
    } else {
        // SAFETY: CURRENT is set only inside `Team::enter`, which outlives this call.
        unsafe { &*team }.run(units, &work);
    }
}

/// A pointer to a slice's elements shared by the units of one loop, each touching its own.
struct SharedSlice<T>(*mut T);
// SAFETY: the units of a loop touch disjoint elements (see the callers below).
unsafe impl<T: Send> Send for SharedSlice<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedSlice<T> {}

impl<T> SharedSlice<T> {
    /// Elements `range` of the slice.
    ///
    /// # Safety
    /// `range` lies inside the slice and no other live reference touches it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn part(&self, range: std::ops::Range<usize>) -> &mut [T] {
        unsafe { std::slice::from_raw_parts_mut(self.0.add(range.start), range.len()) }
    }
}

/// Calls `work(i, chunk)` for the consecutive `chunk`-long pieces of `data` (the last may be
/// shorter), as [`parallel_for`] does.
pub fn parallel_chunks<T: Send>(
    threads: usize,
    data: &mut [T],
    chunk: usize,
    work: impl Fn(usize, &mut [T]) + Sync,
) {
    let (len, chunk) = (data.len(), chunk.max(1));
    let base = SharedSlice(data.as_mut_ptr());
    parallel_for(threads, len.div_ceil(chunk), |i| {
        let range = i * chunk..((i + 1) * chunk).min(len);
        // SAFETY: the pieces are disjoint and inside `data`, borrowed for this call.
        work(i, unsafe { base.part(range) })
    });
}

/// As [`parallel_chunks`], each piece with its own element of `states` (a scratch buffer per
/// worker); `states` must have at least as many elements as there are pieces.
pub fn parallel_chunks_with<T: Send, S: Send>(
    threads: usize,
    data: &mut [T],
    chunk: usize,
    states: &mut [S],
    work: impl Fn(usize, &mut [T], &mut S) + Sync,
) {
    let (len, chunk) = (data.len(), chunk.max(1));
    let pieces = len.div_ceil(chunk);
    assert!(
        states.len() >= pieces,
        "{pieces} pieces of work need as many scratch buffers, {} given",
        states.len()
    );
    let base = SharedSlice(data.as_mut_ptr());
    let state = SharedSlice(states.as_mut_ptr());
    parallel_for(threads, pieces, |i| {
        let range = i * chunk..((i + 1) * chunk).min(len);
        // SAFETY: the pieces and the states are disjoint, inside slices borrowed for this call.
        work(i, unsafe { base.part(range) }, unsafe {
            &mut state.part(i..i + 1)[0]
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_unit_runs_once_and_helpers_take_part() {
        let team = Team::new(3).unwrap();
        assert_eq!(team.threads(), 3);
        team.enter(|| {
            for units in [0, 1, 2, 7, 1000] {
                let counts: Vec<AtomicU32> = (0..units).map(|_| AtomicU32::new(0)).collect();
                parallel_for(3, units, |i| {
                    counts[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(counts.iter().all(|c| c.load(Ordering::Relaxed) == 1));
            }
            let names = Mutex::new(std::collections::BTreeSet::new());
            parallel_for(3, 64, |_| {
                std::thread::sleep(std::time::Duration::from_micros(200));
                let n = std::thread::current()
                    .name()
                    .unwrap_or("caller")
                    .to_string();
                names.lock().unwrap().insert(n);
            });
            assert!(names.lock().unwrap().len() >= 2, "only one thread worked");
        });
    }

    /// A member stuck in a unit has the rest of its share taken by the others: the caller's
    /// first unit (its share is units 0..3 of 6) waits until all five other units are done,
    /// which only the helper can do.
    #[test]
    fn a_stuck_members_share_is_taken_by_the_others() {
        let team = Team::new(2).unwrap();
        team.enter(|| {
            let done = AtomicU32::new(0);
            let helper_took = Mutex::new(Vec::new());
            parallel_for(2, 6, |i| {
                if i == 0 {
                    let start = std::time::Instant::now();
                    while done.load(Ordering::Acquire) < 5 {
                        assert!(start.elapsed().as_secs() < 10, "units 1..6 were not taken");
                        std::hint::spin_loop();
                    }
                } else {
                    helper_took.lock().unwrap().push(i);
                    done.fetch_add(1, Ordering::Release);
                }
            });
            let mut took = helper_took.into_inner().unwrap();
            took.sort();
            assert_eq!(took, [1, 2, 3, 4, 5]);
        });
    }

    #[test]
    fn nested_loops_run_serially_and_jobs_work_after_sleeping() {
        let team = Team::new(2).unwrap();
        let total = AtomicU32::new(0);
        for _ in 0..3 {
            // between inferences the helper sleeps; the next one must wake it
            std::thread::sleep(std::time::Duration::from_millis(2));
            team.enter(|| {
                parallel_for(2, 8, |_| {
                    parallel_for(2, 4, |_| {
                        total.fetch_add(1, Ordering::Relaxed);
                    })
                })
            });
        }
        assert_eq!(total.load(Ordering::Relaxed), 3 * 32);
        // a loop outside any inference of the team still works (helpers asleep)
        let t = AtomicU32::new(0);
        team.run(5, &|_| {
            t.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(t.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn a_panic_on_a_helper_reaches_the_caller() {
        let team = Team::new(2).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            team.enter(|| {
                parallel_for(2, 64, |i| {
                    std::thread::sleep(std::time::Duration::from_micros(50));
                    assert!(i != 40, "unit 40");
                })
            })
        }));
        assert!(r.is_err());
        // the team still works afterwards
        let t = AtomicU32::new(0);
        team.enter(|| parallel_for(2, 10, |_| _ = t.fetch_add(1, Ordering::Relaxed)));
        assert_eq!(t.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn denormals_flush_to_zero_while_the_guard_lives() {
        let tiny = std::hint::black_box(f32::MIN_POSITIVE);
        let half = std::hint::black_box(0.5f32);
        assert!(tiny * half > 0.0, "denormals exist outside the guard");
        {
            let _flush = FlushDenormals::new();
            let tiny = std::hint::black_box(f32::MIN_POSITIVE);
            assert_eq!(tiny * std::hint::black_box(half), 0.0);
        }
        assert!(
            tiny * std::hint::black_box(half) > 0.0,
            "the mode is restored"
        );
    }

    #[test]
    fn chunks_cover_the_slice_with_their_own_states() {
        let team = Team::new(2).unwrap();
        let mut data = vec![0usize; 103];
        let mut states = vec![0usize; 11];
        team.enter(|| {
            parallel_chunks_with(2, &mut data, 10, &mut states, |i, piece, st| {
                piece.iter_mut().for_each(|v| *v = i);
                *st = piece.len();
            })
        });
        assert!(data.iter().enumerate().all(|(k, &v)| v == k / 10));
        assert_eq!(&states[..], &[10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 3]);
        parallel_chunks(2, &mut data, 7, |i, piece| {
            piece.iter_mut().for_each(|v| *v = i)
        });
        assert!(data.iter().enumerate().all(|(k, &v)| v == k / 7));
    }
}
