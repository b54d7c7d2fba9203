"""PVC vm plugin: /vm endpoints over the v0.6 /domains ZooKeeper layout."""
