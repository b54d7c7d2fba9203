"""The metadata plugin (provisioner.md §5): cloud-init's view of the VM that asks."""
