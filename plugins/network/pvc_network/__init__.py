"""PVC network plugin: /network endpoints over the v0.6 /networks ZooKeeper layout."""
