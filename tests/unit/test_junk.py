"""wgmux.junk: the hub's own AmneziaWG junk before a reflected initiation.

Drawing is pure; sending uses raw sockets from HubPort while another socket
holds HubPort (as the hub's WireGuard does), checked inside a netlab node."""

import random
from types import SimpleNamespace


from wgmux import wire
from wgmux.junk import junk_datagrams, send_junk

AWG = SimpleNamespace(jc=5, jmin=64, jmax=200, s1=23, s2=41, s3=9, s4=12,
                      h1=(100_000, 100_999), h2=(200_000, 299_999),
                      h3=(3_000_000_000, 3_000_065_535), h4=(400_000, 2_000_000_000))


def test_junk_sizes_and_never_a_message():
    rng = random.Random(3)
    classifier = wire.Classifier.from_params(AWG)
    sizes = set()
    for _ in range(2000):
        junk = junk_datagrams(AWG, rng)
        assert len(junk) == AWG.jc
        for j in junk:
            assert AWG.jmin <= len(j) < AWG.jmax
            # H4 spans nearly half of all u32 values here: only redrawing keeps
            # junk from looking like a transport packet
            assert classifier.classify(j)[0] is None
            sizes.add(len(j))
    assert sizes == set(range(AWG.jmin, AWG.jmax))


def test_plain_wireguard_gets_no_junk_and_equal_bounds_give_jmin():
    assert junk_datagrams(SimpleNamespace(jc=0, jmin=0, jmax=0)) == []
    assert {len(j) for j in junk_datagrams(SimpleNamespace(jc=3, jmin=50, jmax=50))} == {50}


def test_hook_form_calls_the_given_sender():
    sent = []
    assert send_junk(sent.append, AWG, random.Random(2)) == AWG.jc
    assert len(sent) == AWG.jc and all(AWG.jmin <= len(d) < AWG.jmax for d in sent)
    assert send_junk(sent.append, SimpleNamespace(jc=0)) == 0
