//! The pages of a full load's partition, read ahead of the job. Each page is asked for as soon as the link to it
//! is known — skimmed from the page before, ahead of parsing it — and the page before has room to wait in, not
//! when the job comes for it, so the
//! requests the limits allow stay in flight while dynsync parses, converts and writes: a partition never waits
//! on the others, nor on the batch before. Each reader parses and converts its own pages, on whichever core is
//! free. At most one page waits converted and one unparsed per partition, so a job slower than Dynamics holds a
//! bounded number of pages, not the table.

use crate::pipeline::task::AbortOnDrop;
use dataverse::{Client, PageReply, Query};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// A page read ahead and converted, and the link to the one after it (`None` after the partition's last).
pub struct Ahead<T> {
    pub rows: T,
    pub next: Option<String>,
}

/// One partition's reader: its pages in order, from the target it was started at, each converted by `convert`.
pub struct PagesAhead<T> {
    pages: mpsc::Receiver<Result<Ahead<T>, dataverse::Error>>,
    _task: AbortOnDrop<()>,
}

impl<T: Send + 'static> PagesAhead<T> {
    /// Starts reading `query`'s pages from `first` (its path, or a page's link), each read by `convert`.
    pub fn start(
        client: &Client,
        query: &Query,
        first: String,
        convert: impl Fn(&PageReply) -> Result<T, dataverse::Error> + Send + 'static,
    ) -> PagesAhead<T> {
        let (client, query) = (client.clone(), query.clone());
        let (pages, taken) = mpsc::channel(1);
        let task = AbortOnDrop::spawn(async move {
            let ask = |target: String| {
                let (client, query) = (client.clone(), query.clone());
                AbortOnDrop::spawn(async move { client.query_reply(&query, Some(&target)).await })
            };
            let mut asked = Some(ask(first));
            while let Some(reply) = asked.take() {
                let Some(reply) = reply.finished().await else { return };
                // The next page is asked for as soon as there is room for this one: at once while the job keeps
                // up, else once it has taken the page before — so a slow job holds at most one page converted and
                // one unparsed per partition, not a third arriving.
                let (reply, next) = match reply.and_then(|reply| reply.next_link().map(|next| (reply, next))) {
                    Ok(read) => read,
                    Err(error) => {
                        let _ = pages.send(Err(error)).await;
                        return;
                    }
                };
                let Ok(room) = pages.reserve().await else { return };
                asked = next.clone().map(ask);
                // The request goes out before this task parses: a task spawned runs next on this thread, and only
                // once this one yields — parsing a page would hold it back for as long as that takes.
                tokio::task::yield_now().await;
                room.send(convert(&reply).map(|rows| Ahead { rows, next }));
            }
        });
        PagesAhead { pages: taken, _task: task }
    }

    fn poll_page(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Ahead<T>, dataverse::Error>>> {
        self.pages.poll_recv(cx)
    }
}

/// How long a batch waits, once one partition's page is there, for the others' pages: one batch of several pages
/// costs a Parquet file, a manifest and an acknowledgement where one a page would cost as many each.
pub const GATHER: Duration = Duration::from_millis(25);

/// A page taken from a reader: the reader's index, and its page, or `None` if its task ended without one.
pub type Taken<T> = (usize, Option<Result<Ahead<T>, dataverse::Error>>);

/// Waits for a page from any of `readers`, then up to [`GATHER`] for the others' pages. Each reader gives one
/// page at most.
pub async fn ready<T: Send + 'static>(readers: &mut [PagesAhead<T>]) -> Vec<Taken<T>> {
    let mut taken: Vec<Taken<T>> = Vec::new();
    let mut gathering: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        for (i, reader) in readers.iter_mut().enumerate() {
            if taken.iter().any(|(t, _)| *t == i) {
                continue;
            }
            if let Poll::Ready(page) = reader.poll_page(cx) {
                taken.push((i, page));
            }
        }
        if taken.is_empty() {
            return Poll::Pending;
        }
        if taken.len() == readers.len() {
            return Poll::Ready(());
        }
        gathering.get_or_insert_with(|| Box::pin(tokio::time::sleep(GATHER))).as_mut().poll(cx)
    })
    .await;
    taken
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader whose pages are sent by the test: each page's rows are its number.
    fn reader(capacity: usize) -> (PagesAhead<u32>, mpsc::Sender<Result<Ahead<u32>, dataverse::Error>>) {
        let (sender, pages) = mpsc::channel(capacity);
        (PagesAhead { pages, _task: AbortOnDrop::spawn(async {}) }, sender)
    }

    fn page(rows: u32) -> Result<Ahead<u32>, dataverse::Error> {
        Ok(Ahead { rows, next: None })
    }

    #[tokio::test]
    async fn a_batch_takes_one_page_of_each_reader_ready_and_does_not_wait_on_a_slow_one() {
        let (first, to_first) = reader(2);
        let (second, to_second) = reader(2);
        let (slow, _to_slow) = reader(2);
        let (ended, to_ended) = reader(2);
        to_first.send(page(1)).await.unwrap();
        to_first.send(page(2)).await.unwrap();
        drop(to_ended);
        let mut readers = vec![first, slow, second, ended];
        // Sent once the batch has its first page and is gathering the others.
        let late = tokio::spawn(async move { to_second.send(page(3)).await.unwrap() });
        let started = tokio::time::Instant::now();
        let mut taken: Vec<(usize, Option<u32>)> =
            ready(&mut readers).await.into_iter().map(|(i, page)| (i, page.map(|p| p.unwrap().rows))).collect();
        taken.sort();
        late.await.unwrap();
        assert_eq!(taken, [(0, Some(1)), (2, Some(3)), (3, None)], "one page a reader; none from the slow one");
        assert!(started.elapsed() < Duration::from_secs(5), "the slow reader was not waited for");
        // The reader's second page is there for the next batch.
        let next = ready(&mut readers).await;
        assert_eq!(
            next.iter().find(|(i, _)| *i == 0).map(|(_, p)| p.as_ref().unwrap().as_ref().unwrap().rows),
            Some(2)
        );
    }
}
