# trellis-host.nomad.hcl: a Trellis host on every Nomad client (a `system` job), joining the
# lattice over the NATS cluster of nats.nomad.hcl.
#
# What it wires up:
#   - the binary and its providers come from an `artifact` (a tarball you build, below);
#   - NATS addresses come from Consul (the `nats` service nats.nomad.hcl registers);
#   - NATS credentials come from Vault (secret/trellis/nats, field `creds`);
#   - host labels come from the node: region, datacenter, node_class and zone (node meta `zone`),
#     so application manifests can place by them (`requirements: {zone: a}`);
#   - the health endpoint is registered in Consul with a check on /readyz, and the metrics
#     endpoint as its own service (tag `prometheus`) for Prometheus' Consul discovery.
#   - with `otel_endpoint` set, the host also exports traces and the same metrics over OTLP;
#     have Prometheus read metrics from one or the other, not both, or every call counts twice.
#
# Build the artifact (one per CPU architecture, named after Nomad's ${attr.cpu.arch}: amd64,
# arm64), on a machine whose glibc is not newer than the clients':
#   cargo build --release --workspace
#   mkdir -p dist/providers
#   cp target/release/trellis dist/ && cp target/release/trellis-provider-* dist/providers/
#   tar -C dist -czf trellis-0.1.0-linux-amd64.tar.gz trellis providers
# and serve it over HTTPS (or S3/GCS: any go-getter source) at
# ${artifact_base_url}/trellis-<version>-linux-<arch>.tar.gz.
#
# Vault (workload identity, Nomad 1.7+ with `nomad setup vault` done):
#   vault kv put -mount=secret trellis/nats creds=@team-a.creds
#   vault policy write trellis-host - <<'EOF'
#   path "secret/data/trellis/nats" { capabilities = ["read"] }
#   EOF
#   vault write auth/jwt-nomad/role/trellis-host - <<'EOF'
#   {"role_type": "jwt", "bound_audiences": ["vault.io"], "user_claim": "/nomad_job_id",
#    "user_claim_json_pointer": true, "bound_claims": {"nomad_job_id": "trellis-host"},
#    "token_type": "service", "token_policies": ["trellis-host"], "token_period": "30m"}
#   EOF
# (Clusters still on Vault token authentication: replace `role` below with
# `policies = ["trellis-host"]`.)
# With Consul ACLs, the job's Consul token (workload identity) needs service:read on `nats` and
# service:write on `trellis-host` and `trellis-host-metrics`.
#
# Client nodes: optional node meta `zone` (client { meta { zone = "eu-west-1a" } }) becomes the
# host label zone; meta `trellis_scheduler = "true"` runs a scheduler beside the host on that
# node (give it to two or three nodes; one leads, the others stand by).
#
# Operators: hosts take start and stop requests only when signed by a key in `trusted_operators`
# (`trellis keys gen operator`; with none they refuse every one). The scheduler signs its own
# with an operator seed (TRELLIS_OPERATOR_KEY), which this job does not pass. To give scheduler
# nodes one: put it in Vault (vault kv put -mount=secret trellis/operator seed=@operator.nk, and
# add the path to the policy), render it to secrets/operator.nk with a template like the NATS
# credentials one, and add TRELLIS_OPERATOR_KEY={{ env "NOMAD_SECRETS_DIR" }}/operator.nk beside
# TRELLIS_SCHEDULER in the local/trellis.env template. Trust its public key on every host (at
# least :deployer).
#
# Run:
#   nomad job run -var 'artifact_base_url=https://artifacts.internal.example/trellis' \
#     -var 'trusted_issuers=<account public key(s), comma-separated>' \
#     -var 'trusted_operators=<operator public key(s)[:role], comma-separated>' trellis-host.nomad.hcl
#
# Stopping an allocation sends SIGTERM: the host stops taking calls, finishes those in flight
# (drain_timeout), stops its providers and leaves; kill_timeout is drain_timeout + 20 s. Nomad
# caps kill_timeout at the client's max_kill_timeout (default 30s): raise it there before
# raising drain_timeout above 10.

variable "artifact_base_url" {
  type        = string
  description = "Where trellis-<version>-linux-<arch>.tar.gz is served (no trailing slash)."
}

variable "trellis_version" {
  type    = string
  default = "0.1.0"
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

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "lattice" {
  type    = string
  default = "default"
}

variable "drain_timeout" {
  type        = number
  default     = 10
  description = "Seconds SIGTERM waits for calls in flight."
}

variable "js_replicas" {
  type        = number
  default     = 3
  description = "Replicas of the lattice's JetStream buckets (3 on the 3-node NATS cluster)."
}

variable "http_port" {
  type        = number
  default     = 8080
  description = "Port http-server provider links listen on (link config address=0.0.0.0:8080)."
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

job "trellis-host" {
  datacenters = var.datacenters
  type        = "system"

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  # One node at a time, so a new version never takes the whole lattice down at once.
  update {
    max_parallel = 1
    stagger      = "30s"
  }

  group "host" {
    network {
      # Dynamic ports on the node's address; the host binds exactly these (NOMAD_ADDR_*).
      port "health" {}
      port "metrics" {}
      # Not bound by the host itself: the http-server provider listens where its link says.
      # Reserving the port keeps Nomad from giving it to another job on the same node.
      port "http" {
        static = var.http_port
      }
    }

    # Deregister from Consul, wait, then send SIGTERM: load balancers that follow Consul stop
    # sending new requests before the host starts draining.
    shutdown_delay = "5s"

    restart {
      attempts = 3
      interval = "5m"
      delay    = "15s"
      mode     = "delay"
    }

    service {
      name     = "trellis-host"
      provider = "consul"
      port     = "health"
      tags     = ["lattice-${var.lattice}"]

      meta {
        lattice = var.lattice
        node    = "${node.unique.name}"
      }

      # 200 once connected to NATS and serving; 503 while NATS is unreachable or the host is
      # draining.
      check {
        name     = "trellis host ready"
        type     = "http"
        path     = "/readyz"
        interval = "10s"
        timeout  = "2s"
      }
    }

    service {
      name     = "trellis-host-metrics"
      provider = "consul"
      port     = "metrics"
      tags     = ["prometheus", "lattice-${var.lattice}"]

      meta {
        metrics_path = "/metrics"
      }

      check {
        name     = "trellis host metrics"
        type     = "http"
        path     = "/metrics"
        interval = "30s"
        timeout  = "5s"
      }
    }

    task "trellis" {
      driver = "exec"
      # An unprivileged user inside the exec driver's chroot (65534 on Debian, Ubuntu and
      # RHEL; the templates below hand it their files).
      user = "nobody"

      kill_signal  = "SIGTERM"
      kill_timeout = "${var.drain_timeout + 20}s"

      artifact {
        source      = "${var.artifact_base_url}/trellis-${var.trellis_version}-linux-${attr.cpu.arch}.tar.gz"
        destination = "local/trellis"
      }

      config {
        command = "${NOMAD_TASK_DIR}/trellis/trellis"
        args    = ["host"]
      }

      vault {
        role = "trellis-host"
        # The host never talks to Vault itself: no token in its environment or files.
        env          = false
        disable_file = true
        change_mode  = "noop"
      }

      env {
        TRELLIS_LATTICE         = var.lattice
        TRELLIS_HOST_NAME       = "${node.unique.name}"
        TRELLIS_PROVIDER_DIR    = "${NOMAD_TASK_DIR}/trellis/providers"
        TRELLIS_NATS_CREDS      = "${NOMAD_SECRETS_DIR}/nats.creds"
        TRELLIS_JS_REPLICAS     = var.js_replicas
        TRELLIS_TRUSTED_ISSUERS = var.trusted_issuers
        TRELLIS_HEALTH_LISTEN   = "${NOMAD_ADDR_health}"
        TRELLIS_METRICS_LISTEN  = "${NOMAD_ADDR_metrics}"
        TRELLIS_DRAIN_TIMEOUT   = var.drain_timeout
        TRELLIS_MAX_INSTANCES   = 256
        TRELLIS_MAX_MEMORY_MB   = 64
        TRELLIS_LOG_FORMAT      = "json"
        # Labels every node has. Each TRELLIS_LABEL_<KEY> becomes the host label <key>.
        TRELLIS_LABEL_REGION     = "${node.region}"
        TRELLIS_LABEL_DATACENTER = "${node.datacenter}"
        # OpenTelemetry resource; export is on when var.otel_endpoint is set (template below).
        OTEL_SERVICE_NAME        = "trellis-host"
        OTEL_RESOURCE_ATTRIBUTES = "host.name=${node.unique.name},cloud.region=${node.region}"
      }
      # The host writes no files of its own. blobstore-fs links need a writable root inside the
      # chroot: point them at the alloc's data dir (`--config root=/alloc/data/blobs`), which
      # lives as long as the allocation.

      # Settings that depend on Consul or may be absent on a node, read in as environment.
      # change_mode = "noop": the NATS list only seeds the connection (once connected, the host
      # learns every server of the cluster from NATS itself and fails over on its own), so a
      # NATS server restarting must not restart every host; a new list is used at the next start.
      template {
        destination = "local/trellis.env"
        env         = true
        change_mode = "noop"
        data        = <<-EOT
        {{- /* Labels from node attributes and meta that a node may not have: set only if present. */ -}}
        {{ with env "node.class" }}TRELLIS_LABEL_NODE_CLASS={{ . }}{{ end }}
        {{ with env "meta.zone" }}TRELLIS_LABEL_ZONE={{ . }}{{ end }}
        {{ if eq (env "meta.trellis_scheduler") "true" }}TRELLIS_SCHEDULER=true{{ end }}
        {{ with "${var.trusted_operators}" }}TRELLIS_TRUSTED_OPERATORS={{ . }}{{ end }}
        {{ with "${var.otel_endpoint}" }}OTEL_EXPORTER_OTLP_ENDPOINT={{ . }}{{ end }}
        {{ with "${var.otel_protocol}" }}OTEL_EXPORTER_OTLP_PROTOCOL={{ . }}{{ end }}
        {{- /* Every healthy server of the Consul service "nats"; its DNS name if none is yet. */}}
        {{ $nats := service "nats" -}}
        TRELLIS_NATS_URL={{ if $nats }}{{ range $i, $s := $nats }}{{ if $i }},{{ end }}nats://{{ $s.Address }}:{{ $s.Port }}{{ end }}{{ else }}nats://nats.service.consul:4222{{ end }}
        EOT
      }

      # NATS user credentials from Vault (KV v2). The host reads them when it connects: a new
      # secret restarts it (kill_signal, so it drains), each node at a random moment within
      # `splay` so that the lattice keeps serving.
      template {
        destination = "secrets/nats.creds"
        perms       = "0400"
        uid         = 65534
        gid         = 65534
        change_mode = "restart"
        splay       = "60s"
        data        = <<-EOT
        {{ with secret "secret/data/trellis/nats" }}{{ .Data.data.creds }}{{ end }}
        EOT
      }

      resources {
        cpu    = 1000
        memory = 1024
        # Burst above `memory` when the node has room (needs memory oversubscription enabled in
        # the scheduler configuration; ignored otherwise). Components' linear memories count
        # here, the pooling allocator's address-space reservation does not.
        memory_max = 4096
      }
    }
  }
}
