"""The forwarder: the only component that touches the kernel (veth, WireGuard, addresses, routes).

``forwarder.kernel`` is the typed kernel port with its netlink and fake implementations;
``forwarder.vwire`` programs and undoes one side of a connection on top of it;
``forwarder.wireguard`` drives WireGuard (kernel module or wireguard-go).
"""

from sdk import lean

lean.start()
lean.package_init_on_demand("pyroute2")  # the kernel port imports the parts it uses
