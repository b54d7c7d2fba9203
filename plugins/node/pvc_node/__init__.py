"""PVC node plugin: /node endpoints over the v0.6 /nodes ZooKeeper layout."""
