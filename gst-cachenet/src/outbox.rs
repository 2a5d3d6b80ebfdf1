//! Bounded posting of the element's messages. A bus nobody pops keeps every message posted to
//! it; the element keeps a reference to each message it posted and, once a message is writable
//! again (the bus and the application have let go of it), counts it as taken. While `limit`
//! messages are still waiting on the bus, new ones are dropped (and counted) instead of posted,
//! so memory stays bounded when an application never reads the bus.

use std::collections::VecDeque;

/// What to do with a message.
#[derive(Debug)]
pub enum Admit {
    /// Post it (the outbox keeps a reference).
    Post(gst::Message),
    /// Dropped: `limit` messages are waiting; `first` on the first drop of a streak.
    Dropped { first: bool },
}

#[derive(Debug)]
pub struct Outbox {
    pending: VecDeque<gst::Message>,
    limit: usize,
    dropped: u64,
    dropping: bool,
}

impl Outbox {
    /// `limit` messages waiting at most (0: no limit, nothing kept).
    pub fn new(limit: usize) -> Outbox {
        Outbox {
            pending: VecDeque::new(),
            limit,
            dropped: 0,
            dropping: false,
        }
    }

    pub fn admit(&mut self, msg: gst::Message) -> Admit {
        if self.limit == 0 {
            return Admit::Post(msg);
        }
        // The bus hands messages out in order, so the oldest usually go first; but an
        // application may keep any one of them (a reference held past its handler): when the
        // queue is full, every message let go of is counted as taken, not just those before it.
        while self.pending.front().is_some_and(|m| m.is_writable()) {
            self.pending.pop_front();
        }
        if self.pending.len() >= self.limit {
            self.pending.retain(|m| !m.is_writable());
        }
        if self.pending.len() >= self.limit {
            self.dropped += 1;
            let first = !self.dropping;
            self.dropping = true;
            return Admit::Dropped { first };
        }
        self.dropping = false;
        self.pending.push_back(msg.clone());
        Admit::Post(msg)
    }

    /// Messages dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Messages posted and still waiting on the bus (as of the last call to `admit`).
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: u32) -> gst::Message {
        gst::message::Element::new(gst::Structure::builder("m").field("i", i).build())
    }

    #[test]
    fn an_unread_bus_holds_at_most_limit_messages() {
        gst::init().unwrap();
        let bus = gst::Bus::new();
        let mut out = Outbox::new(3);
        let post = |out: &mut Outbox, i| match out.admit(msg(i)) {
            Admit::Post(m) => {
                bus.post(m).unwrap();
                None
            }
            Admit::Dropped { first } => Some(first),
        };
        assert_eq!(
            (0..3).map(|i| post(&mut out, i)).collect::<Vec<_>>(),
            [None; 3]
        );
        assert_eq!(post(&mut out, 3), Some(true));
        assert_eq!(post(&mut out, 4), Some(false));
        assert_eq!(out.dropped(), 2);
        // The application reads two: two more fit.
        for _ in 0..2 {
            drop(bus.pop().unwrap());
        }
        assert_eq!(post(&mut out, 5), None);
        assert_eq!(post(&mut out, 6), None);
        assert_eq!(post(&mut out, 7), Some(true), "a new streak");
        assert_eq!(out.waiting(), 3);
        let got: Vec<u32> = std::iter::from_fn(|| bus.pop())
            .map(|m| m.structure().unwrap().get::<u32>("i").unwrap())
            .collect();
        assert_eq!(got, [2, 5, 6]);
        // The application keeps one message (the oldest) and reads the rest as they come:
        // the others count as read, so messages keep flowing (no head-of-line stall).
        assert_eq!(post(&mut out, 8), None);
        let kept = bus.pop().unwrap();
        for i in 9..20 {
            assert_eq!(
                post(&mut out, i),
                None,
                "message {i} dropped behind a kept one"
            );
            drop(bus.pop().unwrap());
        }
        // The kept one waits, and the last one (read after it was posted) as of the last post.
        assert_eq!(out.waiting(), 2);
        drop(kept);
        assert_eq!(post(&mut out, 20), None);
        assert_eq!(out.waiting(), 1);
        // No limit: nothing kept.
        let mut free = Outbox::new(0);
        assert!(matches!(free.admit(msg(0)), Admit::Post(_)));
        assert_eq!(free.waiting(), 0);
    }
}
