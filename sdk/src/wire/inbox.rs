//! The bookkeeping of one connection, without I/O: fresh request ids, which frame
//! answers which request, and the frames kept, in order and bounded, while a caller
//! waits for something else.

use std::collections::VecDeque;

use parley_protocol::ids::RequestId;
use parley_protocol::wire::server::ServerBody;
use parley_protocol::wire::ServerFrame;

use super::WireError;

/// Request ids and the frames not yet claimed.
#[derive(Debug)]
pub struct Inbox {
    next_rid: u32,
    kept: VecDeque<ServerFrame>,
    capacity: usize,
}

impl Inbox {
    /// Empty; keeps at most `capacity` frames. Request ids start at 1.
    pub fn new(capacity: usize) -> Inbox {
        Inbox {
            next_rid: 1,
            kept: VecDeque::new(),
            capacity,
        }
    }

    /// A request id not used recently on this connection (they wrap after 2³²).
    pub fn next_request_id(&mut self) -> RequestId {
        let rid = RequestId(self.next_rid);
        self.next_rid = self.next_rid.wrapping_add(1);
        rid
    }

    /// A frame read while waiting for the reply to `awaited`: that reply's body, or
    /// `None` once the frame is kept for later ([`WireError::TooManyBuffered`] when
    /// there is no room left).
    pub fn route(
        &mut self,
        awaited: RequestId,
        frame: ServerFrame,
    ) -> Result<Option<ServerBody>, WireError> {
        if frame.rid == Some(awaited) {
            return Ok(Some(frame.body));
        }
        self.keep(frame)?;
        Ok(None)
    }

    /// Keeps `frame` after the others.
    pub fn keep(&mut self, frame: ServerFrame) -> Result<(), WireError> {
        if self.kept.len() >= self.capacity {
            return Err(WireError::TooManyBuffered(self.capacity));
        }
        self.kept.push_back(frame);
        Ok(())
    }

    /// The kept reply to `rid`, if it came while the caller waited for another.
    pub fn take_reply(&mut self, rid: RequestId) -> Option<ServerBody> {
        let at = self.kept.iter().position(|f| f.rid == Some(rid))?;
        self.kept.remove(at).map(|frame| frame.body)
    }

    /// The oldest kept frame, reply or push.
    pub fn oldest(&mut self) -> Option<ServerFrame> {
        self.kept.pop_front()
    }

    /// The oldest kept pushed frame (no `rid`); replies kept before it are dropped,
    /// nobody waits for them any more.
    pub fn oldest_push(&mut self) -> Option<ServerBody> {
        while let Some(frame) = self.kept.pop_front() {
            if frame.rid.is_none() {
                return Some(frame.body);
            }
        }
        None
    }

    /// Every kept frame, oldest first.
    pub fn into_frames(self) -> Vec<ServerFrame> {
        self.kept.into()
    }

    /// How many frames are kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether no frame is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use parley_protocol::ids::Seq;
    use parley_protocol::wire::server::{Done, Drained};

    use super::*;

    fn drained(n: u64) -> ServerFrame {
        ServerFrame::push(ServerBody::Drained(Drained { through: Seq(n) }))
    }

    fn done(rid: u32) -> ServerFrame {
        ServerFrame::reply(RequestId(rid), ServerBody::Done(Done {}))
    }

    #[test]
    fn request_ids_are_fresh_and_wrap() {
        let mut inbox = Inbox::new(4);
        assert_eq!(inbox.next_request_id(), RequestId(1));
        assert_eq!(inbox.next_request_id(), RequestId(2));
        inbox.next_rid = u32::MAX;
        assert_eq!(inbox.next_request_id(), RequestId(u32::MAX));
        assert_eq!(inbox.next_request_id(), RequestId(0));
    }

    #[test]
    fn the_awaited_reply_is_returned_and_everything_else_kept_in_order() {
        let mut inbox = Inbox::new(4);
        assert_eq!(inbox.route(RequestId(3), drained(1)).unwrap(), None);
        assert_eq!(inbox.route(RequestId(3), done(2)).unwrap(), None);
        assert_eq!(
            inbox.route(RequestId(3), done(3)).unwrap(),
            Some(ServerBody::Done(Done {}))
        );
        assert_eq!(inbox.len(), 2);
        // The reply to 2 came early: its waiter finds it kept.
        assert_eq!(
            inbox.take_reply(RequestId(2)),
            Some(ServerBody::Done(Done {}))
        );
        assert_eq!(inbox.take_reply(RequestId(2)), None);
        assert_eq!(inbox.oldest(), Some(drained(1)));
        assert!(inbox.is_empty());
    }

    #[test]
    fn pushes_skip_replies_nobody_claimed() {
        let mut inbox = Inbox::new(4);
        inbox.keep(done(7)).unwrap();
        inbox.keep(drained(5)).unwrap();
        inbox.keep(done(8)).unwrap();
        assert_eq!(
            inbox.oldest_push(),
            Some(ServerBody::Drained(Drained { through: Seq(5) }))
        );
        assert_eq!(inbox.oldest_push(), None);
        assert!(inbox.is_empty());
    }

    #[test]
    fn the_buffer_is_bounded() {
        let mut inbox = Inbox::new(2);
        inbox.route(RequestId(1), drained(1)).unwrap();
        inbox.route(RequestId(1), drained(2)).unwrap();
        assert!(matches!(
            inbox.route(RequestId(1), drained(3)),
            Err(WireError::TooManyBuffered(2))
        ));
        // The awaited reply still gets through a full buffer.
        assert!(inbox.route(RequestId(1), done(1)).unwrap().is_some());
    }
}
