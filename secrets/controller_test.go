package secrets_test

import (
	"bytes"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/horizon-mesh/horizon/e2e/kubetest"
	"github.com/horizon-mesh/horizon/network"
	"github.com/horizon-mesh/horizon/secrets"
)

// Log messages the tests count.
const (
	logAdded     = "remote cluster added"
	logChanged   = "remote cluster credentials changed"
	logRemoved   = "remote cluster removed"
	logRejected  = "remote kubeconfig rejected"
	logDuplicate = "cluster ID already claimed by another remote secret; refused"
	logIgnored   = "remote secret key names the config cluster itself; ignored"
	logTooMany   = "remote secret refused: too many keys"
	logNoRoom    = "remote clusters refused: too many clusters; waiting for room"
)

// overCap returns the data of a Secret with one key more than the default cap: c1
// with kubeconfig c1, the rest refused kubeconfigs that must never be parsed.
func overCap(c1 []byte) kv {
	data := kv{"c1": c1}
	for i := len(data); i <= secrets.DefaultMaxKeysPerSecret; i++ {
		data[fmt.Sprintf("x%03d", i)] = execKubeconfig
	}
	return data
}

// Kubeconfigs LoadKubeconfig refuses, with the reason it gives.
var badKubeconfigs = []struct {
	name, reason string
	data         []byte
}{
	{"exec plugin", `user "remote" uses an exec credential plugin, which is not allowed`,
		kubeconfigWithUser(remoteA.host, "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /bin/sh\n      args: [-c, 'touch /tmp/pwned']\n")},
	{"auth-provider", `user "remote" uses auth-provider "gcp", which is not allowed`,
		kubeconfigWithUser(remoteA.host, "    auth-provider:\n      name: gcp\n")},
	{"token file", "sets tokenFile, a file path, which is not allowed",
		kubeconfigWithUser(remoteA.host, "    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n")},
	{"client key file", "sets client-key, a file path, which is not allowed",
		kubeconfigWithUser(remoteA.host, "    client-certificate-data: eA==\n    client-key: /etc/key.pem\n")},
	{"CA file", `cluster "remote" sets certificate-authority, a file path, which is not allowed`,
		bytes.Replace(remoteA.kubeconfig, []byte("    server: "), []byte("    certificate-authority: /etc/ca.pem\n    server: "), 1)},
	{"not YAML", "kubeconfig is not valid YAML or JSON", []byte("users: [" + secretMarker + "-garbage")},
	{"empty", "kubeconfig is empty", nil},
}

// execKubeconfig is a kubeconfig refused for its exec plugin.
var execKubeconfig = badKubeconfigs[0].data

const execRefused = "uses an exec credential plugin"

// step changes the config cluster's Secrets, then says what must follow.
type step struct {
	name string
	do   action // nil: nothing changes
	// calls are the handler calls the step causes, and no more: in order for each
	// cluster, in any interleaving across clusters.
	calls []call
	// status is every key's status afterwards, sorted by Secret and key.
	status []key
	// logs counts these log messages since the start.
	logs map[string]int
	// events are these Events() counts since the start.
	events map[string]uint64
}

// controllerCase runs a controller over the initial Secrets, then takes its steps.
type controllerCase struct {
	name    string
	opts    func(*secrets.Options) // changes the options; nil: the defaults
	initial []*corev1.Secret       // present before the controller starts
	atSync  []call                 // handler calls made before HasSynced reports true
	steps   []step
}

// TestController drives the controller through a fake config cluster and records
// what it tells its handler, and when: exactly which calls each change causes and
// that nothing else follows. What a user sees end to end (real API servers, real
// remote clusters behind the kubeconfigs, endpoints served) is tested in
// e2e/remotesecret_test.go and e2e/badsecret_test.go.
func TestController(t *testing.T) {
	tests := []controllerCase{
		{
			name: "accepted: one cluster per data key",
			steps: []step{{
				do:     apply(remoteSecret("a", kv{"c1": remoteA.kubeconfig, "c2": remoteB.kubeconfig})),
				calls:  []call{set("c1", "a", remoteA), set("c2", "a", remoteB)},
				status: []key{accepted("a", "c1"), accepted("a", "c2")},
				logs:   map[string]int{logAdded: 2, logRejected: 0},
				events: map[string]uint64{"accepted": 2},
			}},
		},
		{
			name: "Secrets present at start are handled before HasSynced, once",
			initial: []*corev1.Secret{
				remoteSecret("a", kv{"c1": remoteA.kubeconfig}),
				remoteSecret("b", kv{"c2": remoteB.kubeconfig, string(configID): remoteA.kubeconfig}),
				remoteSecret("c", kv{"c1": remoteARotated.kubeconfig, "c3": execKubeconfig}),
			},
			atSync: []call{set("c1", "a", remoteA), set("c2", "b", remoteB)},
			steps: []step{{
				name: "the informer's add events for the same Secrets",
				status: []key{
					accepted("a", "c1"), accepted("b", "c2"), ignored("b", string(configID), "config cluster's own ID"),
					duplicate("c", "c1", "already claimed by secret istio-system/a"), rejected("c", "c3", execRefused),
				},
				logs:   map[string]int{logAdded: 2, logRejected: 1, logDuplicate: 1, logIgnored: 1},
				events: map[string]uint64{"accepted": 2, "rejected": 1, "duplicate": 1, "ignored": 1},
			}},
		},
		{
			name:    "a Secret over the key cap is refused whole; its clusters keep serving",
			initial: []*corev1.Secret{remoteSecret("a", kv{"c1": remoteA.kubeconfig})},
			atSync:  []call{set("c1", "a", remoteA)},
			steps: []step{{
				name:   "101 keys, one rotating c1, the rest exec plugins",
				do:     apply(remoteSecret("a", overCap(remoteARotated.kubeconfig))),
				status: []key{tooMany("a", "has 101 keys, more than the limit of 100 (--remote-max-keys-per-secret)"), accepted("a", "c1")},
				logs:   map[string]int{logAdded: 1, logRejected: 0, logTooMany: 1},
				events: map[string]uint64{"accepted": 1, "too-many-keys": 1},
			}, {
				name:   "written again unchanged",
				do:     touch("a"),
				status: []key{tooMany("a", "has 101 keys"), accepted("a", "c1")},
				logs:   map[string]int{logTooMany: 1},
				events: map[string]uint64{"too-many-keys": 1},
			}, {
				name:   "back under the cap",
				do:     apply(remoteSecret("a", kv{"c1": remoteARotated.kubeconfig, "c2": remoteB.kubeconfig})),
				calls:  []call{set("c1", "a", remoteARotated), set("c2", "a", remoteB)},
				status: []key{accepted("a", "c1"), accepted("a", "c2")},
				events: map[string]uint64{"accepted": 2, "updated": 1, "too-many-keys": 1},
			}},
		},
		{
			name:    "a Secret over the key cap at start starts no cluster",
			initial: []*corev1.Secret{remoteSecret("a", overCap(remoteA.kubeconfig))},
			steps: []step{{
				status: []key{tooMany("a", "has 101 keys")},
				logs:   map[string]int{logAdded: 0, logRejected: 0, logTooMany: 1},
				events: map[string]uint64{"too-many-keys": 1},
			}},
		},
		{
			name: "the same bad kubeconfig is not parsed again",
			steps: []step{{
				do:     apply(remoteSecret("a", kv{"c1": execKubeconfig})),
				status: []key{rejected("a", "c1", execRefused)},
				logs:   map[string]int{logRejected: 1},
				events: map[string]uint64{"rejected": 1},
			}, {
				name:   "written again unchanged",
				do:     touch("a"),
				status: []key{rejected("a", "c1", execRefused)},
				logs:   map[string]int{logRejected: 1},
				events: map[string]uint64{"rejected": 1},
			}, {
				name:   "resync",
				do:     resync("a"),
				status: []key{rejected("a", "c1", execRefused)},
				logs:   map[string]int{logRejected: 1},
			}, {
				name:   "a good key added beside it",
				do:     apply(remoteSecret("a", kv{"c1": execKubeconfig, "c2": remoteB.kubeconfig})),
				calls:  []call{set("c2", "a", remoteB)},
				status: []key{rejected("a", "c1", execRefused), accepted("a", "c2")},
				logs:   map[string]int{logRejected: 1},
				events: map[string]uint64{"rejected": 1, "accepted": 1},
			}, {
				name:   "fixed",
				do:     apply(remoteSecret("a", kv{"c1": remoteA.kubeconfig, "c2": remoteB.kubeconfig})),
				calls:  []call{set("c1", "a", remoteA)},
				status: []key{accepted("a", "c1"), accepted("a", "c2")},
				logs:   map[string]int{logRejected: 1, logAdded: 2},
				events: map[string]uint64{"rejected": 1, "accepted": 2},
			}},
		},
		{
			name: "a bad edit keeps the cluster; the next bad edit is parsed",
			steps: []step{{
				do:     apply(remoteSecret("a", kv{"c1": remoteA.kubeconfig})),
				calls:  []call{set("c1", "a", remoteA)},
				status: []key{accepted("a", "c1")},
			}, {
				name:   "bad edit",
				do:     apply(remoteSecret("a", kv{"c1": execKubeconfig})),
				status: []key{rejected("a", "c1", execRefused+", which is not allowed; the cluster keeps its previous credentials")},
				logs:   map[string]int{logRejected: 1, logRemoved: 0},
			}, {
				name:   "rotated",
				do:     apply(remoteSecret("a", kv{"c1": remoteARotated.kubeconfig})),
				calls:  []call{set("c1", "a", remoteARotated)},
				status: []key{accepted("a", "c1")},
				logs:   map[string]int{logChanged: 1},
			}, {
				name:   "the same bad edit again",
				do:     apply(remoteSecret("a", kv{"c1": execKubeconfig})),
				status: []key{rejected("a", "c1", "keeps its previous credentials")},
				logs:   map[string]int{logRejected: 2},
				events: map[string]uint64{"rejected": 2, "accepted": 2, "updated": 1},
			}},
		},
		{
			name: "a bad edit reverted: the cluster already has that kubeconfig",
			steps: []step{{
				do:    apply(remoteSecret("a", kv{"c1": remoteA.kubeconfig})),
				calls: []call{set("c1", "a", remoteA)},
			}, {
				name:   "bad edit",
				do:     apply(remoteSecret("a", kv{"c1": execKubeconfig})),
				status: []key{rejected("a", "c1", "keeps its previous credentials")},
			}, {
				name:   "reverted",
				do:     apply(remoteSecret("a", kv{"c1": remoteA.kubeconfig})),
				status: []key{accepted("a", "c1")},
				logs:   map[string]int{logChanged: 0},
				events: map[string]uint64{"updated": 0},
			}},
		},
		{
			name: "rotation: a changed kubeconfig updates the cluster, the same one again does nothing",
			steps: []step{{
				do:    apply(remoteSecret("a", kv{"c1": remoteA.kubeconfig})),
				calls: []call{set("c1", "a", remoteA)},
			}, {
				name:   "rotated",
				do:     apply(remoteSecret("a", kv{"c1": remoteARotated.kubeconfig})),
				calls:  []call{set("c1", "a", remoteARotated)},
				status: []key{accepted("a", "c1")},
				logs:   map[string]int{logAdded: 1, logChanged: 1},
				events: map[string]uint64{"updated": 1, "accepted": 1},
			}, {
				name:   "written again unchanged",
				do:     touch("a"),
				status: []key{accepted("a", "c1")},
				logs:   map[string]int{logChanged: 1},
				events: map[string]uint64{"updated": 1},
			}, {
				name:   "resync",
				do:     resync("a"),
				status: []key{accepted("a", "c1")},
				logs:   map[string]int{logChanged: 1},
			}},
		},
		{
			name: "duplicate cluster ID waits, then takes over when the first Secret is deleted",
			steps: []step{{
				do:    apply(remoteSecret("a", kv{"c1": remoteA.kubeconfig})),
				calls: []call{set("c1", "a", remoteA)},
			}, {
				name:   "second claim",
				do:     apply(remoteSecret("b", kv{"c1": remoteB.kubeconfig})),
				status: []key{accepted("a", "c1"), duplicate("b", "c1", `cluster ID "c1" is already claimed by secret istio-system/a`)},
				logs:   map[string]int{logDuplicate: 1},
				events: map[string]uint64{"duplicate": 1},
			}, {
				name:   "second claim written again",
				do:     touch("b"),
				status: []key{accepted("a", "c1"), duplicate("b", "c1", "already claimed by secret istio-system/a")},
				logs:   map[string]int{logDuplicate: 1},
				events: map[string]uint64{"duplicate": 1},
			}, {
				name:   "first claim deleted",
				do:     del("a"),
				calls:  []call{remove("c1"), set("c1", "b", remoteB)},
				status: []key{accepted("b", "c1")},
			}},
		},
		{
			name: "duplicate cluster ID takes over when the first Secret drops the key",
			steps: []step{{
				do:    apply(remoteSecret("a", kv{"c1": remoteA.kubeconfig, "c2": remoteB.kubeconfig})),
				calls: []call{set("c1", "a", remoteA), set("c2", "a", remoteB)},
			}, {
				name:   "second claim",
				do:     apply(remoteSecret("b", kv{"c1": remoteARotated.kubeconfig})),
				status: []key{accepted("a", "c1"), accepted("a", "c2"), duplicate("b", "c1", "already claimed by secret istio-system/a")},
			}, {
				name:   "key dropped",
				do:     apply(remoteSecret("a", kv{"c2": remoteB.kubeconfig})),
				calls:  []call{remove("c1"), set("c1", "b", remoteARotated)},
				status: []key{accepted("a", "c2"), accepted("b", "c1")},
			}},
		},
		{
			name: "duplicate cluster ID: of several waiting, the first by name takes over",
			steps: []step{{
				do:    apply(remoteSecret("a", kv{"c1": remoteA.kubeconfig})),
				calls: []call{set("c1", "a", remoteA)},
			}, {
				name: "two more claims",
				do: all(
					apply(remoteSecret("c", kv{"c1": remoteB.kubeconfig})),
					apply(remoteSecret("b", kv{"c1": remoteARotated.kubeconfig}))),
				status: []key{
					accepted("a", "c1"),
					duplicate("b", "c1", "already claimed by secret istio-system/a"),
					duplicate("c", "c1", "already claimed by secret istio-system/a"),
				},
			}, {
				name:   "first claim deleted",
				do:     del("a"),
				calls:  []call{remove("c1"), set("c1", "b", remoteARotated)},
				status: []key{accepted("b", "c1"), duplicate("c", "c1", "already claimed by secret istio-system/b")},
			}},
		},
		{
			name: "duplicate cluster ID: a rejected kubeconfig claims nothing",
			steps: []step{{
				do:     apply(remoteSecret("a", kv{"c1": execKubeconfig})),
				status: []key{rejected("a", "c1", execRefused)},
			}, {
				name:   "a good claim",
				do:     apply(remoteSecret("b", kv{"c1": remoteB.kubeconfig})),
				calls:  []call{set("c1", "b", remoteB)},
				status: []key{rejected("a", "c1", execRefused), accepted("b", "c1")},
			}, {
				name:   "the rejected one fixed",
				do:     apply(remoteSecret("a", kv{"c1": remoteA.kubeconfig})),
				status: []key{duplicate("a", "c1", "already claimed by secret istio-system/b"), accepted("b", "c1")},
			}},
		},
		{
			name: "cluster cap: keys past it wait, with one log line per Secret change, and come up as room is made",
			opts: func(o *secrets.Options) { o.MaxClusters = 2 },
			initial: []*corev1.Secret{
				remoteSecret("a", kv{"c1": remoteA.kubeconfig, "c2": remoteB.kubeconfig}),
				remoteSecret("b", kv{"c3": remoteB.kubeconfig, "c4": remoteA.kubeconfig, "c5": execKubeconfig}),
			},
			atSync: []call{set("c1", "a", remoteA), set("c2", "a", remoteB)},
			steps: []step{{
				name: "at start",
				status: []key{accepted("a", "c1"), accepted("a", "c2"), waitingForRoom("b", "c3"), waitingForRoom("b", "c4"),
					rejected("b", "c5", execRefused)},
				logs:   map[string]int{logNoRoom: 1},
				events: map[string]uint64{"too-many-clusters": 2, "accepted": 2, "rejected": 1},
			}, {
				name:   "the waiting Secret written again: no new log line",
				do:     touch("b"),
				status: []key{accepted("a", "c1"), accepted("a", "c2"), waitingForRoom("b", "c3"), waitingForRoom("b", "c4"), rejected("b", "c5", execRefused)},
				logs:   map[string]int{logNoRoom: 1},
				events: map[string]uint64{"too-many-clusters": 2},
			}, {
				name:   "credentials of a cluster in place still rotate",
				do:     apply(remoteSecret("a", kv{"c1": remoteARotated.kubeconfig, "c2": remoteB.kubeconfig})),
				calls:  []call{set("c1", "a", remoteARotated)},
				status: []key{accepted("a", "c1"), accepted("a", "c2"), waitingForRoom("b", "c3"), waitingForRoom("b", "c4"), rejected("b", "c5", execRefused)},
			}, {
				name:   "a new Secret waits too",
				do:     apply(remoteSecret("c", kv{"c6": remoteA.kubeconfig})),
				status: []key{accepted("a", "c1"), accepted("a", "c2"), waitingForRoom("b", "c3"), waitingForRoom("b", "c4"), rejected("b", "c5", execRefused), waitingForRoom("c", "c6")},
				logs:   map[string]int{logNoRoom: 2},
			}, {
				name:   "one cluster removed: the first waiting key by Secret and key takes its place",
				do:     apply(remoteSecret("a", kv{"c1": remoteARotated.kubeconfig})),
				calls:  []call{remove("c2"), set("c3", "b", remoteB)},
				status: []key{accepted("a", "c1"), accepted("b", "c3"), waitingForRoom("b", "c4"), rejected("b", "c5", execRefused), waitingForRoom("c", "c6")},
				logs:   map[string]int{logNoRoom: 2},
			}, {
				name:   "a Secret deleted: the next waiting key comes up",
				do:     del("a"),
				calls:  []call{remove("c1"), set("c4", "b", remoteA)},
				status: []key{accepted("b", "c3"), accepted("b", "c4"), rejected("b", "c5", execRefused), waitingForRoom("c", "c6")},
			}, {
				name:   "a waiting Secret deleted: nothing else changes",
				do:     del("c"),
				status: []key{accepted("b", "c3"), accepted("b", "c4"), rejected("b", "c5", execRefused)},
			}},
		},
		{
			name: "the config cluster's own ID is ignored",
			steps: []step{{
				do:    apply(remoteSecret("a", kv{string(configID): remoteA.kubeconfig, "c1": remoteB.kubeconfig})),
				calls: []call{set("c1", "a", remoteB)},
				status: []key{
					accepted("a", "c1"),
					ignored("a", string(configID), `cluster ID "config" is the config cluster's own ID`),
				},
				logs:   map[string]int{logIgnored: 1, logAdded: 1},
				events: map[string]uint64{"ignored": 1, "accepted": 1},
			}, {
				name:   "written again",
				do:     touch("a"),
				status: []key{accepted("a", "c1"), ignored("a", string(configID), "config cluster's own ID")},
				logs:   map[string]int{logIgnored: 1},
				events: map[string]uint64{"ignored": 1},
			}, {
				name:   "deleted: the config cluster is not removed",
				do:     del("a"),
				calls:  []call{remove("c1")},
				status: []key{},
			}},
		},
		{
			name: "key removed: only its cluster goes",
			steps: []step{{
				do:    apply(remoteSecret("a", kv{"c1": remoteA.kubeconfig, "c2": remoteB.kubeconfig})),
				calls: []call{set("c1", "a", remoteA), set("c2", "a", remoteB)},
			}, {
				name:   "c2 removed",
				do:     apply(remoteSecret("a", kv{"c1": remoteA.kubeconfig})),
				calls:  []call{remove("c2")},
				status: []key{accepted("a", "c1")},
				logs:   map[string]int{logRemoved: 1},
				events: map[string]uint64{"removed": 1},
			}},
		},
		{
			name: "Secret deleted: all its clusters go, and only those",
			steps: []step{{
				do: all(
					apply(remoteSecret("a", kv{"c1": remoteA.kubeconfig, "c2": remoteB.kubeconfig, "c3": execKubeconfig})),
					apply(remoteSecret("b", kv{"c4": remoteARotated.kubeconfig}))),
				calls: []call{set("c1", "a", remoteA), set("c2", "a", remoteB), set("c4", "b", remoteARotated)},
			}, {
				name:   "a deleted",
				do:     del("a"),
				calls:  []call{remove("c1"), remove("c2")},
				status: []key{accepted("b", "c4")},
				logs:   map[string]int{logRemoved: 2},
				events: map[string]uint64{"removed": 3},
			}, {
				name:   "a written again",
				do:     apply(remoteSecret("a", kv{"c1": remoteA.kubeconfig})),
				calls:  []call{set("c1", "a", remoteA)},
				status: []key{accepted("a", "c1"), accepted("b", "c4")},
			}},
		},
		{
			name: "changes missed while the watch was down are caught up by the relist",
			steps: []step{{
				do: all(
					apply(remoteSecret("a", kv{"c1": remoteA.kubeconfig, "c2": remoteB.kubeconfig})),
					apply(remoteSecret("b", kv{"c3": remoteA.kubeconfig}))),
				calls: []call{set("c1", "a", remoteA), set("c2", "a", remoteB), set("c3", "b", remoteA)},
			}, {
				name: "a deleted (seen as a tombstone), b rotated, c created",
				do: whileDisconnected(
					del("a"),
					apply(remoteSecret("b", kv{"c3": remoteARotated.kubeconfig})),
					apply(remoteSecret("c", kv{"c4": remoteB.kubeconfig}))),
				calls:  []call{remove("c1"), remove("c2"), set("c3", "b", remoteARotated), set("c4", "c", remoteB)},
				status: []key{accepted("b", "c3"), accepted("c", "c4")},
			}},
		},
		{
			name: "a Secret without the remote-secret label is ignored until it has it",
			steps: []step{{
				do: all(
					apply(withLabel(remoteSecret("unlabelled", kv{"c1": remoteA.kubeconfig}), "")),
					apply(withLabel(remoteSecret("label-false", kv{"c2": remoteB.kubeconfig}), "false")),
					apply(inNamespace(remoteSecret("elsewhere", kv{"c3": remoteB.kubeconfig}), "elsewhere"))),
				status: []key{},
			}, {
				name:   "labelled",
				do:     apply(remoteSecret("unlabelled", kv{"c1": remoteA.kubeconfig})),
				calls:  []call{set("c1", "unlabelled", remoteA)},
				status: []key{accepted("unlabelled", "c1")},
			}, {
				name:   "label set to false",
				do:     apply(withLabel(remoteSecret("unlabelled", kv{"c1": remoteA.kubeconfig}), "false")),
				calls:  []call{remove("c1")},
				status: []key{},
			}},
		},
	}
	for _, r := range badKubeconfigs {
		tests = append(tests, controllerCase{
			name: "rejected: " + r.name,
			steps: []step{{
				do:     apply(remoteSecret("bad", kv{"c1": r.data, "c2": remoteB.kubeconfig})),
				calls:  []call{set("c2", "bad", remoteB)},
				status: []key{rejected("bad", "c1", r.reason), accepted("bad", "c2")},
				logs:   map[string]int{logRejected: 1},
				events: map[string]uint64{"rejected": 1, "accepted": 1},
			}},
		})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, atSync := startWith(t, tt.opts, tt.initial...)
			if err := sameCalls(atSync, tt.atSync); err != nil {
				t.Fatalf("before HasSynced: %v", err)
			}
			done := len(atSync) // the calls before HasSynced come first
			for i, st := range tt.steps {
				if st.name == "" {
					st.name = fmt.Sprint("step ", i)
				}
				if st.do != nil {
					st.do(t, h)
				}
				kubetest.Eventually(t, timeout, func() error {
					if err := sameCalls(h.handler.since(done), st.calls); err != nil {
						return fmt.Errorf("%s: %w", st.name, err)
					}
					if st.status == nil {
						return nil
					}
					return h.checkStatus(st.status)
				})
				// Nothing else follows.
				h.barrier(t)
				if err := sameCalls(h.handler.since(done), st.calls); err != nil {
					t.Fatalf("%s: %v", st.name, err)
				}
				if st.status != nil {
					if err := h.checkStatus(st.status); err != nil {
						t.Fatalf("%s: %v", st.name, err)
					}
				}
				for msg, want := range st.logs {
					if got := h.logs.count(msg); got != want {
						t.Errorf("%s: %d log lines %q, want %d", st.name, got, msg, want)
					}
				}
				events := h.events()
				for outcome, want := range st.events {
					if events[outcome] != want {
						t.Errorf("%s: Events()[%q] = %d, want %d (all: %v)", st.name, outcome, events[outcome], want, events)
					}
				}
				done = h.handler.count()
			}
			h.checkNoSecrets(t)
			if n := h.handler.overlaps.Load(); n != 0 {
				t.Errorf("handler called concurrently %d times", n)
			}
		})
	}
}

func withLabel(s *corev1.Secret, value string) *corev1.Secret {
	if value == "" {
		s.Labels = nil
	} else {
		s.Labels[network.LabelMultiCluster] = value
	}
	return s
}

func inNamespace(s *corev1.Secret, ns string) *corev1.Secret {
	s.Namespace = ns
	return s
}

// TestRefusalCounts: each refused kubeconfig counts once, under the kind of field
// that made it unusable, however often its Secret is delivered or written again
// unchanged; every kind is reported, zero included.
func TestRefusalCounts(t *testing.T) {
	impersonating := kubeconfigWithUser(remoteA.host, "    token: "+secretMarker+"\n    as: system:admin\n")
	basicAuth := kubeconfigWithUser(remoteA.host, "    username: admin\n    password: "+secretMarker+"\n")
	h, _ := start(t, remoteSecret("a", kv{"c1": execKubeconfig, "c2": impersonating, "c3": remoteA.kubeconfig}))
	check := func(step string, want map[secrets.RefusalKind]uint64) {
		t.Helper()
		h.barrier(t)
		got := h.ctrl.Refusals()
		if len(got) != len(secrets.RefusalKinds) {
			t.Errorf("%s: Refusals() has %d kinds, want all %d: %v", step, len(got), len(secrets.RefusalKinds), got)
		}
		for _, k := range secrets.RefusalKinds {
			if got[k] != want[k] {
				t.Errorf("%s: Refusals()[%s] = %d, want %d (all: %v)", step, k, got[k], want[k], got)
			}
		}
	}
	check("at start", map[secrets.RefusalKind]uint64{secrets.RefusedExec: 1, secrets.RefusedImpersonation: 1})
	touch("a")(t, h)
	resync("a")(t, h)
	check("written and delivered again", map[secrets.RefusalKind]uint64{secrets.RefusedExec: 1, secrets.RefusedImpersonation: 1})
	apply(remoteSecret("a", kv{"c1": execKubeconfig, "c2": basicAuth, "c3": remoteA.kubeconfig}))(t, h)
	check("a new bad kubeconfig", map[secrets.RefusalKind]uint64{secrets.RefusedExec: 1, secrets.RefusedImpersonation: 1, secrets.RefusedBasicAuth: 1})
	var rejected int
	for _, r := range h.logs.all() {
		if r.msg == logRejected {
			rejected++
			if r.attrs["refused"] == "" {
				t.Errorf("rejection logged without its kind: %+v", r)
			}
		}
	}
	if rejected != 3 {
		t.Errorf("%d rejections logged, want 3", rejected)
	}
	h.checkNoSecrets(t)
}
