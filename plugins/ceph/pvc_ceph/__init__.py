"""PVC ceph plugin."""
