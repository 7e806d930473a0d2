package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"

	"github.com/kappa-cqrs/kappa/api"
	"github.com/kappa-cqrs/kappa/auth"
	"github.com/kappa-cqrs/kappa/httpserver"
	"github.com/kappa-cqrs/kappa/kafka"
	"github.com/kappa-cqrs/kappa/producer/ingest"
	"github.com/kappa-cqrs/kappa/producer/processor"
	"github.com/kappa-cqrs/kappa/projections/clickhouse"
	"github.com/kappa-cqrs/kappa/projections/postgres"
	"github.com/kappa-cqrs/kappa/projector"
	"github.com/kappa-cqrs/kappa/roles"
	"github.com/kappa-cqrs/kappa/secret"
	"github.com/kappa-cqrs/kappa/tlsconfig"
)

// componentDefaults are the components' own defaults, from their
// setDefaults, for the flags' ${...} defaults: the command line shows and
// uses exactly what a zero value in the code would. Only the addresses of
// the local stack (`make stack`) are the command line's own defaults.
func componentDefaults() kong.Vars {
	proc := processor.Config{}.WithDefaults()
	chProjector := projector.Config{}.WithDefaults((*clickhouse.Store)(nil))
	pgProjector := projector.Config{}.WithDefaults((*postgres.Store)(nil))
	a := api.Config{}.WithDefaults()
	in := ingest.IntakeConfig{}.WithDefaults()
	topics := kafka.TopicConfig{}.WithDefaults()
	r := roles.Config{}.WithDefaults()
	pg := postgres.Config{}.WithDefaults()
	ch := clickhouse.Config{}.WithDefaults()
	hs := httpserver.Config{}.WithDefaults()
	jwtCfg := auth.JWTConfig{}.WithDefaults()
	return kong.Vars{
		"topic_prefix":              r.TopicPrefix,
		"group_prefix":              r.GroupPrefix,
		"http_addr":                 r.HTTPAddr,
		"partitions":                strconv.Itoa(int(topics.Partitions)),
		"session_timeout":           duration(proc.SessionTimeout),
		"stall_timeout":             duration(proc.StallTimeout),
		"idempotency_window":        duration(in.IdempotencyWindow),
		"transaction_interval":      duration(proc.TransactionInterval),
		"state_cache_bytes":         strconv.FormatInt(proc.StateCacheBytes, 10),
		"state_cache_aggregates":    strconv.Itoa(proc.StateCacheAggregates),
		"fetch_max_bytes":           strconv.Itoa(int(proc.FetchMaxBytes)),
		"heap_floor":                strconv.FormatInt(proc.HeapFloor, 10),
		"clickhouse_flush_interval": duration(chProjector.FlushInterval),
		"postgres_flush_interval":   duration(pgProjector.FlushInterval),
		"max_batch_records":         strconv.Itoa(chProjector.MaxBatchRecords),
		"max_body_bytes":            strconv.FormatInt(a.MaxBodyBytes, 10),
		"max_batch_body_bytes":      strconv.FormatInt(a.MaxBatchBodyBytes, 10),
		"max_batch_commands":        strconv.Itoa(a.MaxBatchCommands),
		"max_wait":                  duration(a.MaxWait),
		"lookup_wait":               duration(a.LookupWait),
		"postgres_schema":           pg.Schema,
		"clickhouse_database":       ch.Database,
		"clickhouse_user":           ch.Username,
		"http_read_header_timeout":  duration(hs.ReadHeaderTimeout),
		"http_read_timeout":         duration(hs.ReadTimeout),
		"http_write_timeout":        duration(hs.WriteTimeout),
		"http_idle_timeout":         duration(hs.IdleTimeout),
		"http_max_header_bytes":     strconv.Itoa(hs.MaxHeaderBytes),
		"jwt_tenant_claim":          jwtCfg.TenantClaim,
		"jwt_leeway":                duration(jwtCfg.Leeway),
		"api_key_cache_ttl":         duration(auth.NewKeys(nil, 0).CacheTTL()),
		"command_rate_limit":        strconv.FormatFloat(a.CommandRate, 'f', -1, 64),
		"command_burst":             strconv.Itoa(a.CommandBurst),
		"read_rate_limit":           strconv.FormatFloat(a.ReadRate, 'f', -1, 64),
		"read_burst":                strconv.Itoa(a.ReadBurst),
		"max_position_waits":        strconv.Itoa(a.MaxPositionWaiters),
	}
}

// duration writes 24h as 24h, not 24h0m0s.
func duration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// The local stack's addresses are the command line's own defaults.
type kafkaFlags struct {
	Brokers        []string      `env:"KAPPA_KAFKA_BROKERS" default:"127.0.0.1:19092" help:"Kafka seed brokers, comma-separated."`
	TopicPrefix    string        `env:"KAPPA_TOPIC_PREFIX" default:"${topic_prefix}" help:"Prefix of the topic names (<prefix>.commands, .events, .events.dlq)."`
	Partitions     int32         `env:"KAPPA_PARTITIONS" default:"${partitions}" help:"Partitions of the commands and events topics when Kappa creates them."`
	GroupPrefix    string        `env:"KAPPA_GROUP_PREFIX" default:"${group_prefix}" help:"Prefix of the consumer groups (<prefix>-processor, -clickhouse, -postgres)."`
	InstanceID     string        `env:"KAPPA_INSTANCE_ID" help:"Static group member id (KIP-345), unique per instance of a role, e.g. the pod name; a restarted instance then takes its partitions back at once."`
	SessionTimeout time.Duration `env:"KAPPA_SESSION_TIMEOUT" default:"${session_timeout}" help:"How long a consumer group waits for a silent member before moving its partitions."`
	StallTimeout   time.Duration `env:"KAPPA_STALL_TIMEOUT" default:"${stall_timeout}" help:"How long a group member may hold no partition while some have no owner, or let records wait without applying any, before its /readyz says so."`

	KafkaTLS              bool   `name:"kafka-tls" env:"KAPPA_KAFKA_TLS" help:"Connect to Kafka over TLS (implied by the other --kafka-tls-* flags); the brokers' certificates are checked against the system's CAs or --kafka-tls-ca-file."`
	KafkaTLSCAFile        string `name:"kafka-tls-ca-file" env:"KAPPA_KAFKA_TLS_CA_FILE" type:"path" help:"PEM CA certificates that signed the brokers' certificates."`
	KafkaTLSCertFile      string `name:"kafka-tls-cert-file" env:"KAPPA_KAFKA_TLS_CERT_FILE" type:"path" help:"PEM client certificate, for brokers that require one (with --kafka-tls-key-file)."`
	KafkaTLSKeyFile       string `name:"kafka-tls-key-file" env:"KAPPA_KAFKA_TLS_KEY_FILE" type:"path" help:"PEM key of --kafka-tls-cert-file."`
	KafkaTLSServerName    string `name:"kafka-tls-server-name" env:"KAPPA_KAFKA_TLS_SERVER_NAME" help:"Name to check in the brokers' certificates instead of the host dialed."`
	KafkaSASLMechanism    string `name:"kafka-sasl-mechanism" env:"KAPPA_KAFKA_SASL_MECHANISM" enum:",PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER" default:"" help:"SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER; empty for none."`
	KafkaSASLUsername     string `name:"kafka-sasl-username" env:"KAPPA_KAFKA_SASL_USERNAME" help:"SASL user (PLAIN, SCRAM)."`
	KafkaSASLPassword     string `name:"kafka-sasl-password" env:"KAPPA_KAFKA_SASL_PASSWORD" help:"SASL password (PLAIN, SCRAM); prefer --kafka-sasl-password-file."`
	KafkaSASLPasswordFile string `name:"kafka-sasl-password-file" env:"KAPPA_KAFKA_SASL_PASSWORD_FILE" type:"path" help:"File holding the SASL password."`
	KafkaSASLTokenFile    string `name:"kafka-sasl-token-file" env:"KAPPA_KAFKA_SASL_TOKEN_FILE" type:"path" help:"File holding the OAUTHBEARER token; read again at every authentication."`
}

func (k kafkaFlags) apply(c *roles.Config) error {
	c.Kafka.Brokers, c.TopicPrefix, c.CreateTopics.Partitions, c.GroupPrefix = k.Brokers, k.TopicPrefix, k.Partitions, k.GroupPrefix
	c.Processor.InstanceID, c.Processor.SessionTimeout, c.Processor.StallTimeout = k.InstanceID, k.SessionTimeout, k.StallTimeout
	for _, p := range []*projector.Config{&c.ClickHouseProjector, &c.PostgresProjector} {
		p.InstanceID, p.SessionTimeout, p.StallTimeout = k.InstanceID, k.SessionTimeout, k.StallTimeout
	}
	if k.KafkaTLS || k.KafkaTLSCAFile != "" || k.KafkaTLSCertFile != "" || k.KafkaTLSKeyFile != "" || k.KafkaTLSServerName != "" {
		c.Kafka.TLS = &kafka.TLS{CAFile: k.KafkaTLSCAFile, CertFile: k.KafkaTLSCertFile, KeyFile: k.KafkaTLSKeyFile, ServerName: k.KafkaTLSServerName}
	}
	if k.KafkaSASLMechanism == "" {
		return nil
	}
	password, err := secretOf("kafka-sasl-password", k.KafkaSASLPassword, k.KafkaSASLPasswordFile)
	if err != nil {
		return err
	}
	c.Kafka.SASL = &kafka.SASL{Mechanism: k.KafkaSASLMechanism, Username: k.KafkaSASLUsername, Password: password, TokenFile: k.KafkaSASLTokenFile}
	return nil
}

// secretOf is a secret given on the command line (or its environment
// variable) or, better, in a file; not both.
func secretOf(flag, value, file string) (secret.Value, error) {
	switch {
	case value != "" && file != "":
		return secret.Value{}, fmt.Errorf("--%s and --%s-file both given; give one", flag, flag)
	case file != "":
		return secret.FromFile(file)
	}
	return secret.New(value), nil
}

type postgresFlags struct {
	PostgresURL          string `name:"postgres-url" env:"KAPPA_POSTGRES_URL" default:"postgres://kappa:kappa@127.0.0.1:55432/kappa?sslmode=disable" help:"Postgres connection URL."`
	PostgresSchema       string `name:"postgres-schema" env:"KAPPA_POSTGRES_SCHEMA" default:"${postgres_schema}" help:"Postgres schema of the read models."`
	PostgresPassword     string `name:"postgres-password" env:"KAPPA_POSTGRES_PASSWORD" help:"Postgres password, replacing the URL's; prefer --postgres-password-file."`
	PostgresPasswordFile string `name:"postgres-password-file" env:"KAPPA_POSTGRES_PASSWORD_FILE" type:"path" help:"File holding the Postgres password."`
}

func (p postgresFlags) apply(c *roles.Config) error {
	password, err := secretOf("postgres-password", p.PostgresPassword, p.PostgresPasswordFile)
	c.Postgres.URL, c.Postgres.Schema, c.Postgres.Password = p.PostgresURL, p.PostgresSchema, password
	return err
}

type clickhouseFlags struct {
	ClickHouseAddr          []string `name:"clickhouse-addr" env:"KAPPA_CLICKHOUSE_ADDR" default:"127.0.0.1:19000" help:"ClickHouse native-protocol addresses."`
	ClickHouseDatabase      string   `name:"clickhouse-database" env:"KAPPA_CLICKHOUSE_DATABASE" default:"${clickhouse_database}" help:"ClickHouse database of the projection."`
	ClickHouseUser          string   `name:"clickhouse-user" env:"KAPPA_CLICKHOUSE_USER" default:"${clickhouse_user}" help:"ClickHouse user."`
	ClickHousePassword      string   `name:"clickhouse-password" env:"KAPPA_CLICKHOUSE_PASSWORD" help:"ClickHouse password; prefer --clickhouse-password-file."`
	ClickHousePasswordFile  string   `name:"clickhouse-password-file" env:"KAPPA_CLICKHOUSE_PASSWORD_FILE" type:"path" help:"File holding the ClickHouse password."`
	ClickHouseTLS           bool     `name:"clickhouse-tls" env:"KAPPA_CLICKHOUSE_TLS" help:"Connect over TLS to ClickHouse's secure native port (implied by the other --clickhouse-tls-* flags)."`
	ClickHouseTLSCAFile     string   `name:"clickhouse-tls-ca-file" env:"KAPPA_CLICKHOUSE_TLS_CA_FILE" type:"path" help:"PEM CA certificates that signed ClickHouse's certificate."`
	ClickHouseTLSCertFile   string   `name:"clickhouse-tls-cert-file" env:"KAPPA_CLICKHOUSE_TLS_CERT_FILE" type:"path" help:"PEM client certificate (with --clickhouse-tls-key-file)."`
	ClickHouseTLSKeyFile    string   `name:"clickhouse-tls-key-file" env:"KAPPA_CLICKHOUSE_TLS_KEY_FILE" type:"path" help:"PEM key of --clickhouse-tls-cert-file."`
	ClickHouseTLSServerName string   `name:"clickhouse-tls-server-name" env:"KAPPA_CLICKHOUSE_TLS_SERVER_NAME" help:"Name to check in ClickHouse's certificate instead of the host dialed."`
}

func (f clickhouseFlags) apply(c *roles.Config) error {
	password, err := secretOf("clickhouse-password", f.ClickHousePassword, f.ClickHousePasswordFile)
	c.ClickHouse.Addr, c.ClickHouse.Database = f.ClickHouseAddr, f.ClickHouseDatabase
	c.ClickHouse.Username, c.ClickHouse.Password = f.ClickHouseUser, password
	if f.ClickHouseTLS || f.ClickHouseTLSCAFile != "" || f.ClickHouseTLSCertFile != "" || f.ClickHouseTLSKeyFile != "" || f.ClickHouseTLSServerName != "" {
		c.ClickHouse.TLS = &tlsconfig.Client{CAFile: f.ClickHouseTLSCAFile, CertFile: f.ClickHouseTLSCertFile, KeyFile: f.ClickHouseTLSKeyFile, ServerName: f.ClickHouseTLSServerName}
	}
	return err
}

type httpFlags struct {
	HTTPAddr          string        `name:"http-addr" env:"KAPPA_HTTP_ADDR" default:"${http_addr}" help:"Listen address of the HTTP API."`
	MaxBodyBytes      int64         `env:"KAPPA_MAX_BODY_BYTES" default:"${max_body_bytes}" help:"Largest body of POST /v1/commands."`
	MaxBatchBodyBytes int64         `env:"KAPPA_MAX_BATCH_BODY_BYTES" default:"${max_batch_body_bytes}" help:"Largest body of POST /v1/commands:batch."`
	MaxBatchCommands  int           `env:"KAPPA_MAX_BATCH_COMMANDS" default:"${max_batch_commands}" help:"Most commands in one batch."`
	MaxWait           time.Duration `env:"KAPPA_MAX_WAIT" default:"${max_wait}" help:"Cap on Prefer: wait=N and on lookup waits."`
	LookupWait        time.Duration `env:"KAPPA_LOOKUP_WAIT" default:"${lookup_wait}" help:"How long a lookup with ?position= waits when no Prefer: wait is given."`
	TLSCertFile       string        `name:"tls-cert-file" env:"KAPPA_TLS_CERT_FILE" type:"path" help:"PEM certificate chain of the HTTP API; with --tls-key-file it serves HTTPS, and reads both again when they change."`
	TLSKeyFile        string        `name:"tls-key-file" env:"KAPPA_TLS_KEY_FILE" type:"path" help:"PEM private key of --tls-cert-file."`
	TLSClientCAFile   string        `name:"tls-client-ca-file" env:"KAPPA_TLS_CLIENT_CA_FILE" type:"path" help:"PEM CA certificates; with HTTPS, clients must present a certificate one of them signed (mTLS)."`
	ReadHeaderTimeout time.Duration `name:"http-read-header-timeout" env:"KAPPA_HTTP_READ_HEADER_TIMEOUT" default:"${http_read_header_timeout}" help:"Longest time to read a request's headers."`
	ReadTimeout       time.Duration `name:"http-read-timeout" env:"KAPPA_HTTP_READ_TIMEOUT" default:"${http_read_timeout}" help:"Longest time to read a whole request, body included."`
	WriteTimeout      time.Duration `name:"http-write-timeout" env:"KAPPA_HTTP_WRITE_TIMEOUT" default:"${http_write_timeout}" help:"Longest time from a request's headers to the end of its answer, waits included; must exceed --max-wait."`
	IdleTimeout       time.Duration `name:"http-idle-timeout" env:"KAPPA_HTTP_IDLE_TIMEOUT" default:"${http_idle_timeout}" help:"Keep-alive connections idle this long are closed."`
	MaxHeaderBytes    int           `name:"http-max-header-bytes" env:"KAPPA_HTTP_MAX_HEADER_BYTES" default:"${http_max_header_bytes}" help:"Largest request headers, in bytes."`
	CommandRateLimit  float64       `name:"command-rate-limit" env:"KAPPA_COMMAND_RATE_LIMIT" default:"${command_rate_limit}" help:"Commands a second one credential may send (a batch counts its commands); beyond it 429. Negative: no limit."`
	CommandBurst      int           `name:"command-burst" env:"KAPPA_COMMAND_BURST" default:"${command_burst}" help:"Commands one credential may send at once after a pause; at least --max-batch-commands."`
	ReadRateLimit     float64       `name:"read-rate-limit" env:"KAPPA_READ_RATE_LIMIT" default:"${read_rate_limit}" help:"Reads a second one credential may make; beyond it 429. Negative: no limit."`
	ReadBurst         int           `name:"read-burst" env:"KAPPA_READ_BURST" default:"${read_burst}" help:"Reads one credential may make at once after a pause."`
	MaxPositionWaits  int           `name:"max-position-waits" env:"KAPPA_MAX_POSITION_WAITS" default:"${max_position_waits}" help:"Lookups with ?position= of one credential that may wait at the same time; more are answered 429."`
}

func (h httpFlags) apply(c *roles.Config) {
	c.HTTPAddr = h.HTTPAddr
	c.API.MaxBodyBytes, c.API.MaxBatchBodyBytes, c.API.MaxBatchCommands = h.MaxBodyBytes, h.MaxBatchBodyBytes, h.MaxBatchCommands
	c.API.MaxWait, c.API.LookupWait = h.MaxWait, h.LookupWait
	c.HTTP.TLSCertFile, c.HTTP.TLSKeyFile, c.HTTP.ClientCAFile = h.TLSCertFile, h.TLSKeyFile, h.TLSClientCAFile
	c.HTTP.ReadHeaderTimeout, c.HTTP.ReadTimeout, c.HTTP.WriteTimeout, c.HTTP.IdleTimeout = h.ReadHeaderTimeout, h.ReadTimeout, h.WriteTimeout, h.IdleTimeout
	c.HTTP.MaxHeaderBytes = h.MaxHeaderBytes
	c.API.CommandRate, c.API.CommandBurst, c.API.ReadRate, c.API.ReadBurst = h.CommandRateLimit, h.CommandBurst, h.ReadRateLimit, h.ReadBurst
	c.API.MaxPositionWaiters = h.MaxPositionWaits
}

type opsFlags struct {
	OpsAddr string `env:"KAPPA_OPS_ADDR" help:"Where to serve /healthz, /readyz and /metrics for operators, e.g. :9090 (a port alone binds to loopback; 0.0.0.0:9090 for every interface); empty serves nothing."`
	Pprof   bool   `env:"KAPPA_PPROF" help:"Also serve /debug/pprof on the ops address, for go tool pprof."`
}

func (f opsFlags) apply(c *roles.Config) { c.OpsAddr, c.Pprof = f.OpsAddr, f.Pprof }

// devOpsFlags are the ops flags of kappa dev, which serves them by default.
type devOpsFlags struct {
	OpsAddr string `env:"KAPPA_OPS_ADDR" default:"127.0.0.1:9090" help:"Where to serve /healthz, /readyz and /metrics of every role for operators (a port alone binds to loopback); empty serves nothing."`
	Pprof   bool   `env:"KAPPA_PPROF" help:"Also serve /debug/pprof on the ops address, for go tool pprof."`
}

func (f devOpsFlags) apply(c *roles.Config) { c.OpsAddr, c.Pprof = f.OpsAddr, f.Pprof }

type idempotencyFlags struct {
	IdempotencyWindow time.Duration `env:"KAPPA_IDEMPOTENCY_WINDOW" default:"${idempotency_window}" help:"How long an idempotency key is honoured; ingest and processors must agree."`
}

func (f idempotencyFlags) apply(c *roles.Config) {
	c.Intake.IdempotencyWindow, c.Processor.IdempotencyWindow = f.IdempotencyWindow, f.IdempotencyWindow
}

type processorFlags struct {
	TransactionInterval  time.Duration `env:"KAPPA_TRANSACTION_INTERVAL" default:"${transaction_interval}" help:"Longest wait of a processor's transaction for commands to join it, from the start of the one before; the wait grows with the last transaction's size (1 ms per command), so a lone command is decided at once and a loaded processor starts one every interval. Negative: never wait."`
	StateDir             string        `env:"KAPPA_STATE_DIR" type:"path" help:"Where a processor keeps its local store of aggregate state (a directory per instance inside it); keep it across restarts, and a restart reads only the changelog written since. Empty: $TMPDIR/kappa-state, as Kafka Streams' state.dir (kappa dev: <data-dir>/state)."`
	StateCacheBytes      int64         `env:"KAPPA_STATE_CACHE_BYTES" default:"${state_cache_bytes}" help:"Bytes of memory the local store may cache blocks in."`
	StateCacheAggregates int           `env:"KAPPA_STATE_CACHE_AGGREGATES" default:"${state_cache_aggregates}" help:"Aggregates a processor keeps decoded in memory in front of its store, the most recently used."`
	FetchMaxBytes        int32         `env:"KAPPA_FETCH_MAX_BYTES" default:"${fetch_max_bytes}" help:"Most bytes of commands a processor fetches at once (Kafka's fetch.max.bytes); what it fetches is held decoded until decided, about 15 times its size, so this bounds its memory while it catches up on a backlog."`
	HeapFloor            int64         `env:"KAPPA_HEAP_FLOOR" default:"${heap_floor}" help:"Bytes of heap a processor's process may grow to before collecting garbage while its live heap is below half of that: less CPU on collection for more resident memory. GOGC or GOMEMLIMIT in the environment override it; negative: Go's default."`
}

func (f processorFlags) apply(c *roles.Config) {
	c.Processor.TransactionInterval = f.TransactionInterval
	c.Processor.StateDir, c.Processor.StateCacheBytes, c.Processor.StateCacheAggregates = f.StateDir, f.StateCacheBytes, f.StateCacheAggregates
	c.Processor.FetchMaxBytes, c.Processor.HeapFloor = f.FetchMaxBytes, f.HeapFloor
}

type batchFlags struct {
	ClickHouseFlushInterval time.Duration `env:"KAPPA_CLICKHOUSE_FLUSH_INTERVAL" default:"${clickhouse_flush_interval}" help:"Shortest time the ClickHouse projection collects a batch (ClickHouse wants few, large inserts)."`
	PostgresFlushInterval   time.Duration `env:"KAPPA_POSTGRES_FLUSH_INTERVAL" default:"${postgres_flush_interval}" help:"Shortest time the Postgres projection collects a batch."`
	MaxBatchRecords         int           `env:"KAPPA_MAX_BATCH_RECORDS" default:"${max_batch_records}" help:"Most events in one projection batch."`
}

func (b batchFlags) apply(c *roles.Config) {
	c.ClickHouseProjector.FlushInterval, c.PostgresProjector.FlushInterval = b.ClickHouseFlushInterval, b.PostgresFlushInterval
	c.ClickHouseProjector.MaxBatchRecords, c.PostgresProjector.MaxBatchRecords = b.MaxBatchRecords, b.MaxBatchRecords
}

type authFlags struct {
	Auth           []string      `name:"auth" env:"KAPPA_AUTH" help:"How callers authenticate: api-keys, jwt, both (api-keys,jwt), or none for an open API; ingest refuses to start without it, kappa dev takes API keys and makes one."`
	JWTJWKSURL     string        `name:"jwt-jwks-url" env:"KAPPA_JWT_JWKS_URL" help:"URL of the identity provider's JWKS, fetched again every few minutes and when a token names an unknown key."`
	JWTJWKSFile    string        `name:"jwt-jwks-file" env:"KAPPA_JWT_JWKS_FILE" type:"path" help:"File holding the JWKS, read again when it changes (instead of --jwt-jwks-url)."`
	JWTIssuer      string        `name:"jwt-issuer" env:"KAPPA_JWT_ISSUER" help:"The iss every token must carry."`
	JWTAudience    string        `name:"jwt-audience" env:"KAPPA_JWT_AUDIENCE" help:"An aud every token must carry."`
	JWTTenantClaim string        `name:"jwt-tenant-claim" env:"KAPPA_JWT_TENANT_CLAIM" default:"${jwt_tenant_claim}" help:"The claim that names the caller's tenant."`
	JWTLeeway      time.Duration `name:"jwt-leeway" env:"KAPPA_JWT_LEEWAY" default:"${jwt_leeway}" help:"How far clocks may disagree for exp, nbf and iat."`
	APIKeyCacheTTL time.Duration `name:"api-key-cache-ttl" env:"KAPPA_API_KEY_CACHE_TTL" default:"${api_key_cache_ttl}" help:"How long an API key's state is remembered; a revoked key stops working within it."`
}

func (a authFlags) apply(c *roles.Config) {
	c.Auth.Methods = nil
	for _, m := range a.Auth {
		if m = strings.TrimSpace(m); m != "" {
			c.Auth.Methods = append(c.Auth.Methods, m)
		}
	}
	c.Auth.JWT = auth.JWTConfig{JWKSURL: a.JWTJWKSURL, JWKSFile: a.JWTJWKSFile, Issuer: a.JWTIssuer, Audience: a.JWTAudience,
		TenantClaim: a.JWTTenantClaim, Leeway: a.JWTLeeway}
	c.Auth.KeyCacheTTL = a.APIKeyCacheTTL
}
