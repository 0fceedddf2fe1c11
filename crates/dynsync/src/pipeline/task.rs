//! A task tied to its handle: dropping the handle stops it. A flow's read ahead, and a feed's pages asked for
//! before they are needed, end with the flow that started them rather than running on for nobody.

/// A spawned task that is aborted when this handle is dropped.
pub struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T: Send + 'static> AbortOnDrop<T> {
    pub fn spawn(task: impl Future<Output = T> + Send + 'static) -> Self {
        AbortOnDrop(tokio::spawn(task))
    }
}

impl<T> AbortOnDrop<T> {
    /// What the task gave; `None` if it panicked.
    pub async fn finished(mut self) -> Option<T> {
        (&mut self.0).await.ok()
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
