//! The pages of a full load's partition, read ahead of the job. Each page is asked for as soon as the link to it
//! is known — skimmed from the page before, ahead of parsing it — and the page before has room to wait in, not
//! when the job comes for it, so the
//! requests the limits allow stay in flight while dynsync parses, converts and writes: a partition never waits
//! on the others, nor on the batch before. Each reader parses and converts its own pages, on whichever core is
//! free. At most one page waits converted and one unparsed per partition, so a job slower than Dynamics holds a
//! bounded number of pages, not the table.

use crate::pipeline::task::AbortOnDrop;
use dataverse::{Client, PageReply, Query};
use std::task::{Context, Poll};
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

/// Waits for a page from any of `readers`, and takes every other page ready then too: by the reader's index, its
/// page, or `None` if its task ended without one.
pub async fn ready<T: Send + 'static>(
    readers: &mut [PagesAhead<T>],
) -> Vec<(usize, Option<Result<Ahead<T>, dataverse::Error>>)> {
    std::future::poll_fn(|cx| {
        let ready: Vec<_> = readers
            .iter_mut()
            .enumerate()
            .filter_map(|(i, reader)| match reader.poll_page(cx) {
                Poll::Ready(page) => Some((i, page)),
                Poll::Pending => None,
            })
            .collect();
        if ready.is_empty() { Poll::Pending } else { Poll::Ready(ready) }
    })
    .await
}
