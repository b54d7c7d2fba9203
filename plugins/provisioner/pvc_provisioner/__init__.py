"""The provisioner plugin (provisioner.md): templates, profiles, scripts and the VM creation task."""
