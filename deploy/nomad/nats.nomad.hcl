# nats.nomad.hcl: the NATS cluster a Trellis lattice runs on: three nats-server processes with
# JetStream on three different Nomad clients, their file stores on host volumes, found by each
# other and by Trellis hosts through Consul.
#
# Consul services it registers (checks on the monitoring port,
# /healthz?js-enabled-only=true):
#   nats          client port 4222  - trellis-host.nomad.hcl builds TRELLIS_NATS_URL from it
#   nats-cluster  route port 6222   - each server's routes to the others
# The check passes as soon as a server runs with JetStream enabled, before the cluster has
# formed. That is deliberate: routes come from the passing `nats-cluster` instances, so a
# check that waited for the cluster would never let it form. (A lone server cannot form
# JetStream on its own: it waits for at least one peer, so bootstrapping from a partial list
# is safe.) Rolling updates wait min_healthy_time for a restarted server to catch up.
#
# Prerequisites:
#   - Three clients with a host volume for the JetStream store (only those run NATS):
#       client {
#         host_volume "nats-js" {
#           path      = "/opt/nats/jetstream"   # install -d -o nobody -m 0700 /opt/nats/jetstream
#           read_only = false
#         }
#       }
#   - Authentication in operator (JWT) mode, so that the .creds file trellis hosts get from
#     Vault means something. With nsc (https://docs.nats.io/using-nats/nats-tools/nsc):
#       nsc add operator --generate-signing-key --sys --name trellis
#       nsc add account TEAM_A            # one account per lattice; enable JetStream on it
#       nsc edit account TEAM_A --js-enable 1
#       nsc add user --account TEAM_A --name host && nsc generate creds -a TEAM_A -n host > team-a.creds
#       vault kv put -mount=secret trellis/nats-server \
#         operator_jwt="$(nsc describe operator --raw)" \
#         system_account="$(nsc describe account SYS --field sub | tr -d '"')" \
#         system_account_jwt="$(nsc describe account SYS --raw)"
#       vault kv put -mount=secret trellis/nats creds=@team-a.creds   # for trellis-host
#     and, once the cluster runs, push the accounts to its resolver:
#       nsc push -A -u nats://<any server>:4222
#   - A Vault policy `trellis-nats` reading secret/data/trellis/nats-server and a JWT role
#     `trellis-nats` bound to nomad_job_id "nats" (as for trellis-host, see that file).
#
# Run: nomad job run nats.nomad.hcl
# Trellis hosts then use TRELLIS_JS_REPLICAS=3 so the lattice's buckets live on all three.

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "nats_version" {
  type    = string
  default = "2.14.9"
}

variable "max_file_store" {
  type        = string
  default     = "10G"
  description = "Most JetStream file storage each server takes on its host volume."
}

job "nats" {
  datacenters = var.datacenters
  type        = "service"

  # One server at a time; a server counts as updated once it has been healthy for a minute
  # (time to catch up with the JetStream streams it replicates).
  update {
    max_parallel      = 1
    health_check      = "checks"
    min_healthy_time  = "60s"
    healthy_deadline  = "5m"
    progress_deadline = "10m"
    auto_revert       = true
  }

  group "nats" {
    count = 3

    # Each server on its own machine: losing a machine loses one replica of each stream, and
    # the other two keep a quorum.
    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    volume "jetstream" {
      type      = "host"
      source    = "nats-js"
      read_only = false
    }

    network {
      # Static ports: one server per machine, and clients and peers find them at well-known
      # addresses.
      port "client" {
        static = 4222
      }
      port "cluster" {
        static = 6222
      }
      port "leaf" {
        static = 7422
      }
      port "monitor" {
        static = 8222
      }
    }

    restart {
      attempts = 5
      interval = "10m"
      delay    = "15s"
      mode     = "delay"
    }

    service {
      name     = "nats"
      provider = "consul"
      port     = "client"
      tags     = ["client"]

      check {
        name     = "nats jetstream"
        type     = "http"
        port     = "monitor"
        path     = "/healthz?js-enabled-only=true"
        interval = "10s"
        timeout  = "2s"
      }
    }

    service {
      name     = "nats-cluster"
      provider = "consul"
      port     = "cluster"
      tags     = ["routes"]

      check {
        name     = "nats jetstream"
        type     = "http"
        port     = "monitor"
        path     = "/healthz?js-enabled-only=true"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "nats-server" {
      driver = "exec"
      user   = "nobody"

      # Lame duck mode: stop accepting clients, move the connected ones (trellis hosts) to the
      # other servers over lame_duck_duration, hand over JetStream leaderships, exit.
      # lame_duck_duration + lame_duck_grace_period (20s + 5s) must fit in kill_timeout, which
      # Nomad caps at the client's max_kill_timeout (default 30s).
      kill_signal  = "SIGUSR2"
      kill_timeout = "30s"

      artifact {
        source      = "https://github.com/nats-io/nats-server/releases/download/v${var.nats_version}/nats-server-v${var.nats_version}-linux-${attr.cpu.arch}.tar.gz"
        destination = "local/"
      }

      config {
        command = "${NOMAD_TASK_DIR}/nats-server-v${var.nats_version}-linux-${attr.cpu.arch}/nats-server"
        args    = ["-c", "${NOMAD_SECRETS_DIR}/nats-server.conf"]
      }

      volume_mount {
        volume      = "jetstream"
        destination = "/data"
      }

      vault {
        role         = "trellis-nats"
        env          = false
        disable_file = true
        change_mode  = "noop"
      }

      # The whole configuration: it holds the operator's JWT, so it goes in secrets/. Routes
      # come from Consul; when a server joins or leaves, the file is rewritten and SIGHUP makes
      # nats-server reload it without a restart.
      template {
        destination   = "secrets/nats-server.conf"
        perms         = "0400"
        uid           = 65534
        gid           = 65534
        change_mode   = "signal"
        change_signal = "SIGHUP"
        data          = <<-EOT
        # Stable per allocation index (nats-0, nats-1, nats-2): JetStream knows its peers by name.
        server_name: nats-{{ env "NOMAD_ALLOC_INDEX" }}
        listen: 0.0.0.0:{{ env "NOMAD_PORT_client" }}
        # The address other servers and clients should use, not every interface of the machine.
        client_advertise: {{ env "NOMAD_ADDR_client" }}
        http: 0.0.0.0:{{ env "NOMAD_PORT_monitor" }}
        lame_duck_duration: 20s
        lame_duck_grace_period: 5s
        # Lets go of a client cut off without a word within about 30 s (default: up to 6 min,
        # while the cut-off host's replicas keep getting calls; docs/reliability.md, scenario 8).
        ping_interval: "10s"
        ping_max: 3

        jetstream {
          store_dir: /data
          max_file_store: ${var.max_file_store}
        }

        cluster {
          name: trellis
          listen: 0.0.0.0:{{ env "NOMAD_PORT_cluster" }}
          advertise: {{ env "NOMAD_ADDR_cluster" }}
          routes: [
        {{- range service "nats-cluster" }}
        {{- if ne (printf "%s:%d" .Address .Port) (env "NOMAD_ADDR_cluster") }}
            nats-route://{{ .Address }}:{{ .Port }}
        {{- end }}
        {{- end }}
          ]
        }

        # Leaf nodes of other regions or edge sites (deploy/nats/leaf.conf) connect here.
        leafnodes {
          listen: 0.0.0.0:{{ env "NOMAD_PORT_leaf" }}
        }

        {{ with secret "secret/data/trellis/nats-server" -}}
        operator: {{ .Data.data.operator_jwt }}
        system_account: {{ .Data.data.system_account }}
        # Accounts pushed with `nsc push`, kept on the JetStream volume and synced between the
        # servers.
        resolver {
          type: full
          dir: /data/jwt
          allow_delete: false
          interval: "2m"
          timeout: "1.9s"
        }
        resolver_preload: {
          {{ .Data.data.system_account }}: {{ .Data.data.system_account_jwt }}
        }
        {{- end }}
        EOT
      }

      resources {
        cpu        = 1000
        memory     = 1024
        memory_max = 2048
      }
    }
  }
}
