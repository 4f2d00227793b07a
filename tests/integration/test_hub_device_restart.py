import time, pytest, subprocess
from netlab import wait_for
from netlab.wireguard import WireGuard, spawn_userspace, USERSPACE_SOCKET_DIR
from wgmux.netlab_hub import serving_pair
from netlab.traffic import ping
pytestmark = pytest.mark.netlab

def test_explore(lab):
    t0 = time.monotonic()
    topo, hub, i, r = serving_pair(lab)
    t1 = time.monotonic()
    print("serving_pair", t1 - t0)
    wg = topo.hub_wg
    print(wg.peers())
    print(hub.show()["peers"])
    times = []
    def before():
        times.append(time.monotonic())
    t2 = time.monotonic()
    wg.restart(before_configure=before)
    t3 = time.monotonic()
    print("restart", t3 - t2, "window", t3 - times[0])
    print(wg.peers())
    wait_for(lambda: hub.show()["peers"][0]["endpoint_last_known"], timeout=5)
    print(hub.show()["peers"])
    print(hub.log()[-2000:])
