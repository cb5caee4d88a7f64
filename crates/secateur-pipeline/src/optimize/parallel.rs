//! Parallel evaluation on the machine's cores. Each worker is a thread with its own
//! single-threaded rayon pool, so the kernels a candidate runs (training, runtime) stay on one
//! core and a result does not depend on how many workers there are. Items are handed out in
//! order; each result is passed to `on_done` on the calling thread as soon as it is ready (to
//! be persisted at once) and all are returned in item order.

use crate::Result;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

/// The number of workers to use when the user does not say: the available cores.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Maps `f` over `items` on `workers` threads.
pub fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: &(dyn Fn(usize, &T) -> Result<R> + Sync),
    on_done: &mut dyn FnMut(usize, &R) -> Result<()>,
) -> Result<Vec<R>> {
    let mut out: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let workers = workers.clamp(1, items.len());
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(usize, Result<R>)>();
    let mut first_error: Option<crate::PipelineError> = None;
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (next, stop) = (&next, &stop);
            scope.spawn(move || {
                let pool = match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send((
                            usize::MAX,
                            Err(crate::invalid!("cannot start a worker: {e}")),
                        ));
                        return;
                    }
                };
                loop {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= items.len() {
                        break;
                    }
                    let r = pool.install(|| f(i, &items[i]));
                    if tx.send((i, r)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (i, r) in rx {
            match r {
                Ok(v) if first_error.is_none() => {
                    if let Err(e) = on_done(i, &v) {
                        stop.store(true, Ordering::SeqCst);
                        first_error = Some(e);
                    }
                    out[i] = Some(v);
                }
                Ok(_) => {}
                Err(e) => {
                    stop.store(true, Ordering::SeqCst);
                    if first_error.is_none() {
                        first_error = Some(e);
                    }
                }
            }
        }
    });
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(out
        .into_iter()
        .map(|r| r.expect("every item produced a result"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_order_and_errors_stop_the_run() {
        let items: Vec<u64> = (0..20).collect();
        let mut seen = Vec::new();
        let r = parallel_map(&items, 3, &|_, x| Ok(x * x), &mut |i, v| {
            seen.push((i, *v));
            Ok(())
        })
        .unwrap();
        assert_eq!(r, items.iter().map(|x| x * x).collect::<Vec<_>>());
        assert_eq!(seen.len(), 20);
        let e = parallel_map(
            &items,
            2,
            &|_, x| {
                if *x == 7 {
                    Err(crate::invalid!("bad item 7"))
                } else {
                    Ok(*x)
                }
            },
            &mut |_, _| Ok(()),
        )
        .unwrap_err();
        assert!(e.to_string().contains("bad item 7"));
    }
}
