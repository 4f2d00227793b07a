"""wgmux check / serve's per-interface checks with several Interfaces
(docs/spec.md §4c): a check made on each interface is said once when it
says the same of each, and otherwise keeps every interface's text under
the worst status."""

from wgmux.preflight import FAIL, OK, WARN, Result, _combined


def test_the_same_of_each_is_said_once():
    r = _combined({
        "eth0": Result(OK, "Datapath \"auto\": TC ingress only on 'eth0' (a veth)", None),
        "eth1": Result(OK, "Datapath \"auto\": TC ingress only on 'eth1' (a veth)", None)})
    assert r == Result(OK, "Datapath \"auto\": TC ingress only on 'eth0', 'eth1' (a veth)", None)


def test_different_results_keep_each_text_and_the_worst_status():
    r = _combined({"eth0": Result(OK, "fine on 'eth0'"),
                   "eth1": Result(WARN, "odd on 'eth1'", "fix eth1"),
                   "eth2": Result(FAIL, "broken on 'eth2'", "fix eth2")})
    assert r.status == FAIL and r.hint == "fix eth2"
    assert r.text == "fine on 'eth0'; odd on 'eth1'; broken on 'eth2'"


def test_one_interface_is_its_result():
    only = Result(WARN, "forwarding is off on 'eth0'", "sysctl")
    assert _combined({"eth0": only}) is only
