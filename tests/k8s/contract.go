package main

// The names the manifests share with the Ferry contract (../shared/CONTRACT.md,
// README.md) and with the Docker/compose setup. A manifest that disagrees
// with one of these fails the check.
const (
	ferryImage = "ferry"      // the sidecar image's repository
	demoImage  = "ferry-demo" // the demo apps' image repository
	pullPolicy = "IfNotPresent"

	ferryContainer  = "ferry" // the sidecar's container name
	ferryPort       = 8080    // ingest, /healthz, /readyz, /metrics
	ferryListen     = "0.0.0.0:8080"
	ferryConfigPath = "/etc/ferry/ferry.json"
	ferrySpoolDir   = "/var/lib/ferry"
	healthPath      = "/healthz"
	readyPath       = "/readyz"
	ingestPath      = "/v1/events"
	appPort         = 9000 // the demo apps' port

	// serve.c: on SIGTERM Ferry waits for open ingest requests until
	// drain_timeout_ms + 5 s, and lets deliveries run until
	// drain_timeout_ms. The grace period must also cover one peer timeout
	// (a request started just before the drain) and the app's preStop.
	drainSlackMs = 5000

	// Pod Security Standard every namespace must enforce.
	podSecurityLabel = "pod-security.kubernetes.io/enforce"
	podSecurityLevel = "restricted"
)

// The demo topology: one Deployment and one Service per name.
// checkout's Service exposes the app to users; the consumers' Services
// expose their Ferry's ingest to checkout's Ferry.
var wantServices = map[string]struct {
	port      int32
	container string // "" for the app container, else a container name
	target    int32  // the container port the Service must reach
}{
	"checkout":  {appPort, "", appPort},
	"inventory": {ferryPort, ferryContainer, ferryPort},
	"shipping":  {ferryPort, ferryContainer, ferryPort},
}

// What each overlay must look like, by the overlay directory's name.
type expect struct {
	namespace  string
	replicas   int32
	pinnedTags bool // images carry an explicit tag other than "latest"
	// Secrets the overlay references but does not render: the user
	// creates them (README). Their keys get placeholder values when the
	// Ferry config is checked.
	externalSecrets []string
}

var overlays = map[string]expect{
	"dev":  {namespace: "ferry-dev", replicas: 1},
	"prod": {namespace: "ferry", replicas: 3, pinnedTags: true, externalSecrets: []string{"ferry-secrets"}},
}
