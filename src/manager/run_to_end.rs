//! An operation that runs in its caller's task and, if the caller stops waiting, finishes in a
//! task of the manager's own.
//!
//! Once started, an add or a release must run to its end: a caller that is cancelled half way
//! may leak nothing. Spawning every operation in a task gives that, at the price of two thread
//! hand-offs per operation (caller to task, task back to caller), and a hand-off is what costs
//! most on a VM: waking a thread on another, idle vCPU took 34 µs here, against 1.2 µs on the
//! same one (`perf bench sched pipe`, docs/performance.md). So the operation is polled inline,
//! by its caller; only if the caller's future is dropped before the operation ended does `Drop`
//! hand the operation's future, as far as it got, to the manager's task tracker, together with
//! what to do with a result nobody will read (an add releases the handle nobody will claim).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type Orphaned<T> = Box<dyn FnOnce(T) -> BoxFuture<()> + Send + 'static>;

/// Runs `op` to its end whatever its caller does (see the module documentation).
pub(crate) struct RunToEnd<T: Send + 'static> {
    /// `None` once the operation ended (its result went to the caller).
    op: Option<BoxFuture<T>>,
    orphaned: Option<Orphaned<T>>,
    tasks: TaskTracker,
    runtime: tokio::runtime::Handle,
    /// Counts this operation among the tracker's while the caller runs it: `Manager::close`
    /// waits for it as for a task. Declared last: dropped after the operation's future.
    _token: TaskTrackerToken,
}

impl<T: Send + 'static> RunToEnd<T> {
    /// `op`, run by whoever awaits the returned future; `orphaned` gets its result if that
    /// caller goes away first. Needs a tokio runtime, where a dropped caller's operation goes
    /// on.
    pub(crate) fn new<F, O, OF>(
        tasks: &TaskTracker,
        op: F,
        orphaned: O,
    ) -> crate::error::Result<RunToEnd<T>>
    where
        F: Future<Output = T> + Send + 'static,
        O: FnOnce(T) -> OF + Send + 'static,
        OF: Future<Output = ()> + Send + 'static,
    {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            crate::error::Error::Internal("the manager's operations need a tokio runtime".into())
        })?;
        Ok(RunToEnd {
            op: Some(Box::pin(op)),
            orphaned: Some(Box::new(move |r| Box::pin(orphaned(r)))),
            tasks: tasks.clone(),
            runtime,
            _token: tasks.token(),
        })
    }
}

impl<T: Send + 'static> Future for RunToEnd<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let Some(op) = self.op.as_mut() else {
            // Polled again after it returned: a caller's bug, never ours (an `async fn` awaits
            // it once). Pending forever would hang that caller; there is no result to give.
            return Poll::Pending;
        };
        match op.as_mut().poll(cx) {
            Poll::Ready(r) => {
                self.op = None;
                self.orphaned = None;
                Poll::Ready(r)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: Send + 'static> Drop for RunToEnd<T> {
    fn drop(&mut self) {
        if let (Some(op), Some(orphaned)) = (self.op.take(), self.orphaned.take()) {
            // If the runtime is shutting down the task is dropped unstarted, as a spawned
            // operation's task would be: recovery settles the operation on the next open.
            self.tasks.spawn_on(
                async move {
                    let r = op.await;
                    orphaned(r).await;
                },
                &self.runtime,
            );
        }
    }
}
