//! Up tunnels: IPv6 and Babel datagrams both ways, fragments, the control
//! stream in order, closing, the send queue's bound.

use super::*;
use re6st_dataplane::nexthop::NextHopError;

fn packets_of(net: &mut Net, i: usize) -> Vec<Packet> {
    std::mem::take(&mut net.nodes[i].packets)
}

#[test]
fn ipv6_and_babel_datagrams_flow_both_ways() {
    let mut net = Net::new(2);
    net.connect(0, 1, 10, 20);
    let (a, b) = (net.nodes[0].address(), net.nodes[1].address());
    let now = net.now;
    let p = ipv6(a, b, 1280, 1);
    net.nodes[0]
        .engine
        .send_datagram(NextHopId(1), p.clone())
        .unwrap();
    let q = ipv6(b, a, 100, 2);
    net.nodes[1]
        .engine
        .send_datagram(NextHopId(1), q.clone())
        .unwrap();
    net.nodes[0].engine.handle_command(
        TunnelCmd::SendBabel {
            tunnel: TunnelId(10),
            bytes: babel(7),
        },
        now,
    );
    net.run_for(20 * MS);
    assert_eq!(
        packets_of(&mut net, 1),
        vec![Packet {
            from: Some(NextHopId(1)),
            bytes: p
        }]
    );
    assert_eq!(
        packets_of(&mut net, 0),
        vec![Packet {
            from: Some(NextHopId(1)),
            bytes: q
        }]
    );
    let ev = net.nodes[1].take_events();
    assert_eq!(
        ev,
        vec![TunnelEvent::Babel {
            tunnel: TunnelId(20),
            bytes: babel(7)
        }]
    );
    let info = net.nodes[0].engine.tunnel_info(TunnelId(10)).unwrap();
    assert_eq!(
        (info.link.tx_packets, info.link.rx_packets),
        (2, 1),
        "{info:?}"
    );
    assert!(!info.suspected);
    // An unknown next hop is an error, not a panic.
    assert_eq!(
        net.nodes[0]
            .engine
            .send_datagram(NextHopId(9), ipv6(a, b, 60, 0)),
        Err(NextHopError::Unknown)
    );
}

#[test]
fn a_packet_above_the_datagram_size_goes_as_fragments() {
    let mut net = Net::new(2);
    let (dialled, _) = net.connect(0, 1, 1, 1);
    let max = dialled.max_datagram.unwrap();
    let (a, b) = (net.nodes[0].address(), net.nodes[1].address());
    let big = ipv6(a, b, 4000, 3);
    assert!(big.len() > max);
    net.nodes[0]
        .engine
        .send_datagram(NextHopId(1), big.clone())
        .unwrap();
    net.run_for(20 * MS);
    let got = packets_of(&mut net, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].bytes, big);
    assert_eq!(net.nodes[1].engine.frame_stats().reassembly.reassembled, 1);
    // A big Babel packet too.
    let mut body = vec![42, 2];
    body.extend(std::iter::repeat_n(9, 3000));
    let now = net.now;
    net.nodes[1].engine.handle_command(
        TunnelCmd::SendBabel {
            tunnel: TunnelId(1),
            bytes: Bytes::from(body.clone()),
        },
        now,
    );
    net.run_for(20 * MS);
    let ev = net.nodes[0].take_events();
    assert!(
        matches!(&ev[..], [TunnelEvent::Babel { bytes, .. }] if bytes[..] == body[..]),
        "{ev:?}"
    );
}

#[test]
fn unknown_and_bad_frames_are_counted_and_dropped() {
    let mut net = Net::new(2);
    net.connect(0, 1, 1, 1);
    for d in [vec![0x7f, 1, 2], vec![0], vec![0x01, 0, 0]] {
        net.nodes[0]
            .engine
            .send_datagram(NextHopId(1), Bytes::from(d))
            .unwrap();
    }
    net.run_for(20 * MS);
    let f = net.nodes[1].engine.frame_stats();
    assert_eq!(f.unknown_frames, 1, "{f:?}");
    assert_eq!(f.bad_frames, 1, "{f:?}");
    assert_eq!(f.reassembly.rejected, 1, "{f:?}");
    assert!(net.nodes[1].packets.is_empty());
    assert!(net.nodes[1].take_events().is_empty());
}

#[test]
fn control_messages_arrive_in_order_big_ones_included() {
    let mut net = Net::new(2);
    net.connect(0, 1, 1, 2);
    let big = Bytes::from(vec![0x30; 200_000]);
    let msgs = vec![
        Control::Drain,
        Control::Crl(big.clone()),
        Control::Crl(Bytes::from_static(b"\x30\x00")),
        Control::Drained,
        Control::Unknown(0x7e),
    ];
    for m in &msgs {
        net.cmd(
            0,
            TunnelCmd::SendControl {
                tunnel: TunnelId(1),
                msg: m.clone(),
            },
        );
    }
    let mut got = Vec::new();
    net.run_until(2_000 * MS, |net| {
        while let Some(m) = net.take_event(1, |e| match e {
            TunnelEvent::Control { tunnel, msg } => {
                assert_eq!(*tunnel, TunnelId(2));
                Some(msg.clone())
            }
            _ => None,
        }) {
            got.push(m);
        }
        got.len() == msgs.len()
    });
    assert_eq!(got, msgs);
}

#[test]
fn garbage_on_the_control_stream_is_reported_once() {
    let mut net = Net::new(2);
    net.connect(0, 1, 1, 2);
    // A truncated Open as a whole frame: typed error, then the stream is
    // dead.
    let ch = net.nodes[0].engine.tunnels[&TunnelId(1)];
    let c = net.nodes[0].engine.conn_mut(ch).unwrap();
    let id = c.ctl.id().unwrap();
    c.q.send_stream(id).write(&[0, 0, 0, 2, 0x01, 1]).unwrap();
    c.q.send_stream(id).write(&[0, 0, 0, 1, 0x04]).unwrap();
    net.nodes[0].engine.queue_transmit(ch);
    net.run_for(50 * MS);
    let ev = net.nodes[1].take_events();
    assert!(
        matches!(
            &ev[..],
            [TunnelEvent::ControlError {
                tunnel: TunnelId(2),
                ..
            }]
        ),
        "{ev:?}"
    );
}

#[test]
fn a_close_reaches_the_peer_and_frees_the_next_hop() {
    let mut net = Net::new(2);
    net.connect(0, 1, 1, 2);
    net.cmd(
        0,
        TunnelCmd::Close {
            tunnel: TunnelId(1),
            code: close::REPLACED,
            reason: "replaced".into(),
        },
    );
    let (a, b) = (net.nodes[0].address(), net.nodes[1].address());
    assert_eq!(
        net.nodes[0]
            .engine
            .send_datagram(NextHopId(1), ipv6(a, b, 60, 0)),
        Err(NextHopError::Unknown),
        "the next hop is gone at once"
    );
    let reason = net.wait_event(1, 1_000 * MS, |e| match e {
        TunnelEvent::Closed { tunnel, reason } if *tunnel == TunnelId(2) => Some(reason.clone()),
        _ => None,
    });
    assert!(reason.contains("replaced"), "{reason}");
    net.run_for(5_000 * MS);
    assert!(
        net.nodes[0].take_events().is_empty(),
        "no Closed after our own Close"
    );
    assert_eq!(net.nodes[0].engine.connections(), 0);
    assert_eq!(net.nodes[1].engine.connections(), 0);
    assert_eq!(
        net.nodes[0].engine.poll_timeout(),
        None,
        "nothing left to wake for"
    );
}

#[test]
fn the_next_hop_can_be_reused_by_another_tunnel() {
    let mut net = Net::new(3);
    net.connect(0, 1, 1, 1);
    net.cmd(
        0,
        TunnelCmd::Close {
            tunnel: TunnelId(1),
            code: close::DONE,
            reason: String::new(),
        },
    );
    net.connect(0, 2, 2, 1);
    let (a, c) = (net.nodes[0].address(), net.nodes[2].address());
    net.nodes[0]
        .engine
        .send_datagram(NextHopId(1), ipv6(a, c, 80, 5))
        .unwrap();
    net.run_for(20 * MS);
    assert_eq!(packets_of(&mut net, 2).len(), 1);
    assert!(packets_of(&mut net, 1).is_empty());
}

#[test]
fn packets_nodecore_sends_come_back_for_routing() {
    let mut net = Net::new(1);
    let p = ipv6(
        net.nodes[0].address(),
        "fd00:77:0:5::1".parse().unwrap(),
        64,
        0,
    );
    net.cmd(0, TunnelCmd::SendPacket { bytes: p.clone() });
    assert_eq!(
        packets_of(&mut net, 0),
        vec![Packet {
            from: None,
            bytes: p
        }]
    );
}

#[test]
fn a_full_send_queue_drops_the_oldest_and_counts() {
    let mut net = Net::new(2);
    net.connect(0, 1, 1, 1);
    let (a, b) = (net.nodes[0].address(), net.nodes[1].address());
    // Far more than the congestion window lets out at once, and than the
    // send queue holds (the default 2 MiB): the oldest are dropped.
    let p = ipv6(a, b, 1400, 0);
    for _ in 0..3_000 {
        net.nodes[0]
            .engine
            .send_datagram(NextHopId(1), p.clone())
            .unwrap();
    }
    let info = net.nodes[0].engine.tunnel_info(TunnelId(1)).unwrap();
    assert_eq!(info.link.tx_packets, 3_000);
    assert!(info.link.tx_dropped > 0, "{info:?}");
    net.run_for(2_000 * MS);
    let got = packets_of(&mut net, 1).len() as u64;
    assert_eq!(
        got,
        3_000 - info.link.tx_dropped,
        "every queued datagram arrives"
    );
}

#[test]
fn a_bulk_transfer_with_large_gso_batches_loses_nothing() {
    // The socket takes 64 segments per send (Linux GSO), but 64 full-size
    // QUIC packets are above what one UDP send may carry: a batch that
    // large would be refused whole and all its datagrams lost.
    let mut net = Net::new(2);
    net.segments = 64;
    net.latency = MS;
    net.connect(0, 1, 1, 1);
    let (a, b) = (net.nodes[0].address(), net.nodes[1].address());
    let sent = 1_200;
    for k in 0..sent {
        net.nodes[0]
            .engine
            .send_datagram(NextHopId(1), ipv6(a, b, 1_400, k as u8))
            .unwrap();
    }
    net.run_for(500 * MS);
    let got = packets_of(&mut net, 1).len();
    let info = net.nodes[0].engine.tunnel_info(TunnelId(1)).unwrap();
    assert!(
        info.quic.cwnd > 64 * 1_452,
        "the window never allowed a large batch: {info:?}"
    );
    assert_eq!(net.too_big, 0, "transmits above a UDP datagram's size");
    assert_eq!(got, sent, "{info:?}");
    assert_eq!((info.quic.lost_packets, info.link.tx_dropped), (0, 0));
}
