//! Answering a stream of requests on one core, a bounded number at a time.

use futures_util::future::{self, Either};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;

/// Answers one stream of requests has in progress at most: beyond it the
/// stream is not read, so its bounded channel fills and the sockets behind
/// it stop being read (each answer holds its request, up to a 1 MiB frame).
pub(super) const ANSWERS_IN_PROGRESS_MAX: usize = 1024;

/// Runs `answer` on every item of `incoming`, all within one task, so that
/// cancelling the task drops every answer in progress, and with them their
/// reply channels. At most `ANSWERS_IN_PROGRESS_MAX` at a time.
pub(super) fn answer_each<T, F, A>(
    mut incoming: impl futures_util::Stream<Item = T> + Unpin + 'static,
    answer: F,
) -> glommio::Task<()>
where
    F: Fn(T) -> A + 'static,
    A: std::future::Future<Output = ()> + 'static,
{
    glommio::spawn_local(async move {
        let mut in_progress = FuturesUnordered::new();
        loop {
            if in_progress.len() >= ANSWERS_IN_PROGRESS_MAX {
                in_progress.next().await;
                continue;
            }
            let next = if in_progress.is_empty() {
                incoming.next().await
            } else {
                match future::select(incoming.next(), in_progress.next()).await {
                    Either::Left((next, _)) => next,
                    Either::Right(_) => continue,
                }
            };
            match next {
                Some(item) => in_progress.push(answer(item)),
                None => break,
            }
        }
        while in_progress.next().await.is_some() {}
    })
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    use std::time::Duration;

    use futures_channel::oneshot;
    use glommio::{LocalExecutorBuilder, Placement};

    use super::*;

    /// A client that pipelines faster than the group answers must meet the
    /// bounded channels, not an ever longer list of answers in progress.
    #[test]
    fn answers_in_progress_are_bounded_and_the_rest_wait_unread() {
        LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(|| async {
                let (started, done) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
                let gates: Rc<RefCell<Vec<oneshot::Sender<()>>>> = Rc::default();
                let requests = 3 * ANSWERS_IN_PROGRESS_MAX;
                let task = {
                    let (started, done, gates) = (started.clone(), done.clone(), gates.clone());
                    answer_each(futures_util::stream::iter(0..requests), move |_| {
                        let (started, done, gates) = (started.clone(), done.clone(), gates.clone());
                        async move {
                            started.set(started.get() + 1);
                            let (tx, rx) = oneshot::channel();
                            gates.borrow_mut().push(tx);
                            let _ = rx.await;
                            done.set(done.get() + 1);
                        }
                    })
                };
                glommio::timer::sleep(Duration::from_millis(20)).await;
                assert_eq!(started.get(), ANSWERS_IN_PROGRESS_MAX);
                while done.get() < requests {
                    for gate in gates.borrow_mut().drain(..) {
                        let _ = gate.send(());
                    }
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                    assert!(started.get() - done.get() <= ANSWERS_IN_PROGRESS_MAX);
                }
                task.await;
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
