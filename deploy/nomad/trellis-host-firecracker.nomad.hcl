# trellis-host-firecracker.nomad.hcl: the Trellis host of trellis-host.nomad.hcl, but each one
# inside its own Firecracker microVM (a `system` job: one VM per Nomad client), for a hardware
# boundary between the lattice's tenants and the machine.
#
# Prerequisites on every client that should run it:
#   - KVM: x86_64 or aarch64 hardware virtualisation, /dev/kvm present; the `tun` module loaded.
#   - The Firecracker binary at /usr/bin/firecracker (or set `firecracker_bin`), in a version
#     the plugin supports (see its README).
#   - The community task driver "firecracker-task-driver"
#     (https://github.com/cneira/firecracker-task-driver) in the client's plugin_dir, enabled in
#     the client configuration:  plugin "firecracker-task-driver" {}
#   - CNI: the plugins ptp, host-local, firewall, portmap and tc-redirect-tap in /opt/cni/bin and
#     a network list /etc/cni/conf.d/trellis.conflist (its name is the `Network` below) that
#     forwards the host's health, metrics and http ports to the VM, for example:
#       {"name": "trellis", "cniVersion": "0.4.0", "plugins": [
#         {"type": "ptp", "ipMasq": true,
#          "ipam": {"type": "host-local", "subnet": "192.168.127.0/24",
#                   "resolvConf": "/etc/resolv.conf"}},
#         {"type": "firewall"},
#         {"type": "portmap", "capabilities": {"portMappings": true},
#          "runtimeConfig": {"portMappings": [
#            {"hostPort": 9090, "containerPort": 9090, "protocol": "tcp"},
#            {"hostPort": 9091, "containerPort": 9091, "protocol": "tcp"},
#            {"hostPort": 8080, "containerPort": 8080, "protocol": "tcp"}]}},
#         {"type": "tc-redirect-tap"}]}
#   - A guest kernel (uncompressed vmlinux, with virtio-blk, virtio-net, ext4 and CONFIG_IP_PNP:
#     the guest's address arrives on the kernel command line) at `kernel_image`.
#   - e2fsprogs 1.43+ (mke2fs -d) on the client, used to pack the VM's configuration.
#   - A root file system image (ext4) at `rootfs_url`, downloaded afresh for each allocation
#     (the VM writes to it). It contains:
#       systemd as init; /usr/local/bin/trellis; /usr/local/lib/trellis/providers/trellis-provider-*
#       (http-server, http-client, keyvalue-redis, keyvalue-nats, messaging-nats, blobstore-fs);
#       deploy/systemd/trellis-host.service in /etc/systemd/system, enabled;
#       in /etc/fstab:  LABEL=trellis-cfg  /etc/trellis  ext4  ro  0  0
#       /etc/resolv.conf linked to /proc/net/pnp, and no DHCP client on eth0.
#   - Vault and Consul set up as for trellis-host.nomad.hcl (same Vault role, trellis-host).
#
# How it differs from trellis-host.nomad.hcl:
#   - A VM sees no task environment and no Nomad directories. A prestart task renders the host's
#     settings (host.env, the same file as deploy/systemd/host.env) and its NATS credentials
#     (nats.creds), from the node, Consul and Vault, into a small ext4 image, attached to the VM
#     as a read-only second disk; the guest mounts it on /etc/trellis and runs the ordinary
#     systemd unit. Changes in Consul or Vault take effect when the allocation is replaced or
#     restarted with `nomad alloc restart -all-tasks` (which runs the prestart task again).
#   - Ports are static (9090 metrics, 9091 health, 8080 http) and reach the VM through the
#     CNI portmap plugin; Consul checks go to the node's address.
#   - No draining on stop. The plugin, as of its current source, does not signal the guest: it
#     waits kill_timeout, then stops the VM. Calls in flight on that host fail (their callers get
#     an error or time out), other replicas keep serving, and the lattice drops the host once
#     its heartbeats stop. kill_timeout is therefore short.
#   - Nomad places the job only on clients where the plugin is loaded and healthy.
#   - Logs: the guest's console (journald forwarded to it) is the task's stdout.
#
# Operators: hosts take start and stop requests only when signed by a key in `trusted_operators`
# (`trellis keys gen operator`; with none they refuse every one). The scheduler signs its own
# with an operator seed (TRELLIS_OPERATOR_KEY), which this job does not pass. To give scheduler
# nodes one: render it from Vault to secrets/vm/operator.nk like nats.creds, add
# TRELLIS_OPERATOR_KEY=/run/credentials/trellis-host.service/operator.nk beside TRELLIS_SCHEDULER
# in host.env, and give the rootfs's trellis-host.service the matching LoadCredential= line.
# Trust its public key on every host (at least :deployer).
#
# Run:
#   nomad job run -var 'rootfs_url=https://artifacts.internal.example/trellis/trellis-0.1.0-rootfs.ext4' \
#     -var 'trusted_issuers=<account public key(s), comma-separated>' \
#     -var 'trusted_operators=<operator public key(s)[:role], comma-separated>' \
#     trellis-host-firecracker.nomad.hcl

variable "rootfs_url" {
  type        = string
  description = "go-getter source of the guest root file system image (ext4)."
}

variable "trusted_issuers" {
  type        = string
  description = "Account public keys (A...) whose signed components hosts run, comma-separated."
}

variable "trusted_operators" {
  type        = string
  default     = ""
  description = "Operator public keys (O...[:role]) hosts take starts and stops from; empty: unset."
}

variable "kernel_image" {
  type    = string
  default = "/var/lib/firecracker/vmlinux"
}

variable "firecracker_bin" {
  type    = string
  default = "/usr/bin/firecracker"
}

variable "nomad_data_dir" {
  type        = string
  default     = "/opt/nomad/data"
  description = "The clients' Nomad data_dir: the plugin takes disk paths on the host."
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "lattice" {
  type    = string
  default = "default"
}

variable "vcpus" {
  type    = number
  default = 2
}

variable "mem_mib" {
  type        = number
  default     = 2048
  description = "Guest memory. Keep max_instances x 2 x max_memory_mb well inside it."
}

variable "max_instances" {
  type    = number
  default = 64
}

variable "max_memory_mb" {
  type    = number
  default = 64
}

variable "js_replicas" {
  type        = number
  default     = 3
  description = "Replicas of the lattice's JetStream buckets (3 on the 3-node NATS cluster)."
}

variable "otel_endpoint" {
  type        = string
  default     = ""
  description = "OTLP endpoint passed through as OTEL_EXPORTER_OTLP_ENDPOINT; empty: unset."
}

variable "otel_protocol" {
  type        = string
  default     = ""
  description = "OTLP protocol, `http/protobuf` or `grpc`; empty: unset (http/protobuf)."
}

job "trellis-host-firecracker" {
  datacenters = var.datacenters
  type        = "system"

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  update {
    max_parallel = 1
    stagger      = "30s"
  }

  group "host" {
    network {
      # Static: the CNI portmap configuration forwards exactly these to the VM.
      port "metrics" {
        static = 9090
      }
      port "health" {
        static = 9091
      }
      port "http" {
        static = 8080
      }
    }

    shutdown_delay = "5s"

    restart {
      attempts = 3
      interval = "5m"
      delay    = "15s"
      mode     = "delay"
    }

    service {
      name         = "trellis-host"
      provider     = "consul"
      port         = "health"
      address_mode = "host"
      tags         = ["lattice-${var.lattice}", "firecracker"]

      check {
        name     = "trellis host ready"
        type     = "http"
        path     = "/readyz"
        interval = "10s"
        timeout  = "2s"
      }
    }

    service {
      name         = "trellis-host-metrics"
      provider     = "consul"
      port         = "metrics"
      address_mode = "host"
      tags         = ["prometheus", "lattice-${var.lattice}", "firecracker"]

      meta {
        metrics_path = "/metrics"
      }
    }

    # Packs the VM's configuration into secrets/trellis-config.img (a 512 KiB ext4 file system
    # labelled trellis-cfg holding host.env and nats.creds). It stays in this task's secrets
    # directory (memory-backed, 1 MiB, not readable through `nomad alloc fs`) for the life of the
    # allocation.
    task "vm-config" {
      lifecycle {
        hook    = "prestart"
        sidecar = false
      }

      driver = "exec"
      user   = "nobody"

      config {
        command = "/sbin/mke2fs"
        args = [
          "-q", "-F", "-t", "ext4", "-O", "^has_journal", "-L", "trellis-cfg",
          "-d", "${NOMAD_SECRETS_DIR}/vm", "${NOMAD_SECRETS_DIR}/trellis-config.img", "512K",
        ]
      }

      vault {
        role         = "trellis-host"
        env          = false
        disable_file = true
        change_mode  = "noop"
      }

      # The guest's /etc/trellis/host.env (deploy/systemd/host.env documents every setting).
      template {
        destination = "secrets/vm/host.env"
        perms       = "0400"
        uid         = 65534
        gid         = 65534
        change_mode = "noop"
        data        = <<-EOT
        {{- $nats := service "nats" -}}
        TRELLIS_NATS_URL={{ if $nats }}{{ range $i, $s := $nats }}{{ if $i }},{{ end }}nats://{{ $s.Address }}:{{ $s.Port }}{{ end }}{{ else }}nats://nats.service.consul:4222{{ end }}
        TRELLIS_LATTICE=${var.lattice}
        TRELLIS_NATS_CREDS=/run/credentials/trellis-host.service/nats.creds
        TRELLIS_JS_REPLICAS=${var.js_replicas}
        TRELLIS_HOST_NAME={{ env "node.unique.name" }}
        TRELLIS_LABEL_REGION={{ env "node.region" }}
        TRELLIS_LABEL_DATACENTER={{ env "node.datacenter" }}
        TRELLIS_LABEL_ISOLATION=firecracker
        {{ with env "node.class" }}TRELLIS_LABEL_NODE_CLASS={{ . }}{{ end }}
        {{ with env "meta.zone" }}TRELLIS_LABEL_ZONE={{ . }}{{ end }}
        {{ if eq (env "meta.trellis_scheduler") "true" }}TRELLIS_SCHEDULER=true{{ end }}
        TRELLIS_PROVIDER_DIR=/usr/local/lib/trellis/providers
        TRELLIS_MAX_INSTANCES=${var.max_instances}
        TRELLIS_MAX_MEMORY_MB=${var.max_memory_mb}
        TRELLIS_TRUSTED_ISSUERS=${var.trusted_issuers}
        {{ with "${var.trusted_operators}" }}TRELLIS_TRUSTED_OPERATORS={{ . }}{{ end }}
        TRELLIS_DRAIN_TIMEOUT=10
        TRELLIS_HEALTH_LISTEN=0.0.0.0:9091
        TRELLIS_METRICS_LISTEN=0.0.0.0:9090
        TRELLIS_LOG_FORMAT=json
        {{ with "${var.otel_endpoint}" }}OTEL_EXPORTER_OTLP_ENDPOINT={{ . }}{{ end }}
        {{ with "${var.otel_protocol}" }}OTEL_EXPORTER_OTLP_PROTOCOL={{ . }}{{ end }}
        OTEL_SERVICE_NAME=trellis-host
        OTEL_RESOURCE_ATTRIBUTES=host.name={{ env "node.unique.name" }},cloud.region={{ env "node.region" }}
        EOT
      }

      # The guest's /etc/trellis/nats.creds (LoadCredential= in trellis-host.service).
      template {
        destination = "secrets/vm/nats.creds"
        perms       = "0400"
        uid         = 65534
        gid         = 65534
        change_mode = "noop"
        data        = <<-EOT
        {{ with secret "secret/data/trellis/nats" }}{{ .Data.data.creds }}{{ end }}
        EOT
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }

    task "trellis" {
      driver = "firecracker-task-driver"

      # The plugin ignores the signal and stops the VM once kill_timeout has passed: a longer
      # timeout only delays the stop (see the header).
      kill_timeout = "5s"

      # Each allocation boots its own copy: the root file system is writable.
      artifact {
        source      = var.rootfs_url
        destination = "rootfs.ext4"
        mode        = "file"
      }

      config {
        Firecracker = var.firecracker_bin
        KernelImage = var.kernel_image
        BootDisk    = "${var.nomad_data_dir}/alloc/${NOMAD_ALLOC_ID}/trellis/rootfs.ext4"
        Disks       = ["${var.nomad_data_dir}/alloc/${NOMAD_ALLOC_ID}/vm-config/secrets/trellis-config.img:ro"]
        # Put in front of the plugin's own options (console=ttyS0 reboot=k panic=1 pci=off
        # nomodules): journald on the serial console, so the host's logs become the task's stdout.
        BootOptions = "systemd.journald.forward_to_console=1"
        Network     = "trellis"
        Vcpus       = var.vcpus
        Mem         = var.mem_mib
      }

      resources {
        cpu = 2000
        # The guest's memory plus Firecracker's own.
        memory = var.mem_mib + 128
      }
    }
  }
}
