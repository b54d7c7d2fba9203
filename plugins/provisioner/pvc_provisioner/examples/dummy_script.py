#!/usr/bin/env python3

# dummy_script.py - PVC provisioner example script: the minimal install() (provisioner.md §4.2)
#
# The provisioner calls install(**kwargs) after the VM's formatted disks are
# mounted under kwargs['temporary_directory']. This one reads the arguments
# every script receives (so a missing one fails loudly) and does nothing.


def install(**kwargs):
    vm_name = kwargs['vm_name']
    temporary_directory = kwargs['temporary_directory']
    disks = kwargs['disks']
    networks = kwargs['networks']
    # Nothing to do: a real script installs an OS beneath temporary_directory.
    del vm_name, temporary_directory, disks, networks
