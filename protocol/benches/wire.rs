//! Criterion benchmarks of the wire codec on the relay's hot path: encoding the frames
//! the server writes for every relayed message (`deliver` with a 200-byte envelope,
//! `accepted`) and decoding the `send` it reads.
//!
//! `cargo bench -p parley-protocol --bench wire -- --warm-up-time 1 --measurement-time 3`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use parley_protocol::ids::{AccountId, DeviceAddress, DeviceId, MessageId, RequestId, Seq};
use parley_protocol::wire::client::{ClientBody, ClientFrame, Send};
use parley_protocol::wire::server::{Accepted, Deliver, ServerBody};
use parley_protocol::wire::{self, ServerFrame};

const ENVELOPE_BYTES: usize = 200;

fn address(byte: u8) -> DeviceAddress {
    DeviceAddress {
        account: AccountId([byte; 32]),
        device: DeviceId::PRIMARY,
    }
}

fn benches(c: &mut Criterion) {
    let id = MessageId([9; 16]);
    let deliver = ServerFrame::push(ServerBody::Deliver(Deliver {
        seq: Seq(123_456),
        from: address(1),
        id,
        sent_at_ms: 1_800_000_000_000,
        ciphertext: vec![0xa5; ENVELOPE_BYTES],
        category: None,
    }));
    let accepted = ServerFrame::reply(
        RequestId(77),
        ServerBody::Accepted(Accepted {
            id,
            seq: Seq(123_456),
        }),
    );
    let send = wire::encode_client(&ClientFrame {
        v: parley_protocol::PROTOCOL_VERSION,
        rid: RequestId(77),
        body: ClientBody::Send(Send {
            to: address(2),
            id,
            ciphertext: vec![0xa5; ENVELOPE_BYTES],
            category: None,
            receipt: false,
        }),
    })
    .unwrap();

    c.bench_function("wire/encode deliver (200 B envelope)", |bench| {
        bench.iter(|| wire::encode_server(black_box(&deliver)).unwrap());
    });
    c.bench_function("wire/encode accepted", |bench| {
        bench.iter(|| wire::encode_server(black_box(&accepted)).unwrap());
    });
    c.bench_function("wire/decode send (200 B envelope)", |bench| {
        bench.iter(|| wire::decode_client(black_box(&send)).unwrap());
    });
}

criterion_group!(wire_benches, benches);
criterion_main!(wire_benches);
