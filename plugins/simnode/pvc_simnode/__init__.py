"""Simulated PVC v0.6 node daemons: the node side of the ZooKeeper contract, with libvirt's test driver."""
