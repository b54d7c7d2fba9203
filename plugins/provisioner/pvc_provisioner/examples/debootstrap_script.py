#!/usr/bin/env python3

# debootstrap_script.py - PVC provisioner example script for a Debian install (provisioner.md §4.3)
#
# Profile arguments (all optional):
#   deb_release=<release>     default "stable"
#   deb_mirror=<URL>          default "http://ftp.debian.org/debian"
#   deb_packages=<a,b,c>      default "linux-image-amd64,grub-pc,cloud-init,python3-cffi-backend,wget"
#
# It needs network access to the mirror and several minutes. Runs as root in the
# provisioner worker; installs only beneath temporary_directory and leaves the
# chroot before returning.

import os


def install(**kwargs):
    vm_name = kwargs['vm_name']
    temporary_directory = kwargs['temporary_directory']
    disks = kwargs['disks']

    deb_release = kwargs.get('deb_release', 'stable')
    deb_mirror = kwargs.get('deb_mirror', 'http://ftp.debian.org/debian')
    deb_packages = kwargs.get('deb_packages', 'linux-image-amd64,grub-pc,cloud-init,python3-cffi-backend,wget')
    deb_packages = deb_packages.split(',')

    # 1. The root disk: the (last) disk mounted at /; nothing to do without one.
    root_disk = None
    for disk in disks:
        if disk['mountpoint'] == '/':
            root_disk = disk
    if not root_disk:
        return

    # 2.-3. debootstrap into the temporary root.
    os.system("apt-get install -y debootstrap")
    os.system("debootstrap --include={pkgs} {suite} {target} {mirror}".format(
        suite=deb_release, target=temporary_directory, mirror=deb_mirror, pkgs=','.join(deb_packages)))

    # 4. The host's /dev inside, for grub.
    os.system(f"mount --bind /dev {temporary_directory}/dev")

    # 5. fstab: one line per disk, addressed by the SCSI id QEMU gives it.
    with open(f"{temporary_directory}/etc/fstab", 'a') as fh:
        for index, disk in enumerate(disks):
            if disk['mountpoint'] == '/':
                dump, cpass = 0, 1
            elif disk['mountpoint'] in ('/var', '/var/log'):
                dump, cpass = 0, 2
            else:
                dump, cpass = 0, 0
            fh.write("/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_drive-scsi0-0-0-{disk} {mountpoint} {filesystem} "
                     "{options} {dump} {cpass}\n".format(disk=index, mountpoint=disk['mountpoint'],
                                                          filesystem=disk['filesystem'],
                                                          options='defaults,discard,noatime,nodiratime',
                                                          dump=dump, cpass=cpass))

    # 6. Hostname.
    with open(f"{temporary_directory}/etc/hostname", 'w') as fh:
        fh.write(vm_name)

    # 7. A target that cloud-init's first boot hangs off (the userdata examples disable it again).
    with open(f"{temporary_directory}/etc/systemd/system/cloud-init.target", 'w') as fh:
        fh.write("[Install]\nWantedBy=multi-user.target\n[Unit]\nDescription=Cloud-init target\n"
                 "After=multi-user.target\n")

    # 8. DHCP on the first interface (PCI slot 2: ens2).
    with open(f"{temporary_directory}/etc/network/interfaces.d/ens2", 'w') as fh:
        fh.write("auto ens2\niface ens2 inet dhcp\n")

    # 9. dhclient: send the VM's name, ask for the usual options and classless routes.
    with open(f"{temporary_directory}/etc/dhcp/dhclient.conf", 'w') as fh:
        fh.write(f"""# DHCP client configuration, written by the PVC provisioner example
option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;
interface "ens2" {{
        send fqdn.fqdn = "{vm_name}";
        send host-name = "{vm_name}";
        request subnet-mask, broadcast-address, time-offset, routers,
                domain-name, domain-name-servers, domain-search, host-name,
                dhcp6.name-servers, dhcp6.domain-search, dhcp6.fqdn, dhcp6.sntp-servers,
                netbios-name-servers, netbios-scope, interface-mtu,
                rfc3442-classless-static-routes, ntp-servers;
}}
""")

    # 10. grub on the serial console too.
    with open(f"{temporary_directory}/etc/default/grub", 'w') as fh:
        fh.write("""# Written by the PVC provisioner example
GRUB_DEFAULT=0
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR="PVC Virtual Machine"
GRUB_CMDLINE_LINUX_DEFAULT="root=/dev/{root_disk} console=tty0 console=ttyS0,115200n8"
GRUB_CMDLINE_LINUX=""
GRUB_TERMINAL=console
GRUB_SERIAL_COMMAND="serial --speed=115200 --unit=0 --word=8 --parity=no --stop=1"
GRUB_DISABLE_LINUX_UUID=false
""".format(root_disk=root_disk['disk_id']))

    # 11. Inside the new system: boot loader, a temporary root password, the cloud-init target.
    real_root = os.open("/", os.O_RDONLY)
    os.chroot(temporary_directory)
    fake_root = os.open("/", os.O_RDONLY)
    os.fchdir(fake_root)
    os.system("grub-install --force /dev/rbd/{}/{}_{}".format(root_disk['pool'], vm_name, root_disk['disk_id']))
    os.system("update-grub")
    os.system("echo root:test123 | chpasswd")  # temporary: replace with userdata
    os.system("systemctl enable cloud-init.target")
    os.fchdir(real_root)
    os.chroot(".")
    os.fchdir(real_root)
    os.close(fake_root)
    os.close(real_root)

    # 12. Leave the host's /dev.
    os.system(f"umount {temporary_directory}/dev")
