package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/horizon-mesh/horizon/clusterregistry"
	"github.com/horizon-mesh/horizon/cmd/horizon/app"
	"github.com/horizon-mesh/horizon/cmd/horizon/app/debugauth"
	"github.com/horizon-mesh/horizon/eds"
	"github.com/horizon-mesh/horizon/secrets"
)

// statusReport is everything `horizon status` shows; -o json prints it as is.
type statusReport struct {
	Clusters []clusterregistry.ClusterStatus `json:"clusters"`
	Secrets  []secrets.KeyStatus             `json:"secrets"`
	Networks app.NetworkzResponse            `json:"networks"`
	Proxies  []eds.ProxyStatus               `json:"proxies"`
	// MCS is /debug/mcsz: the ServiceExport conflicts, in MCS mode.
	MCS app.MCSzResponse `json:"mcs"`
}

// errNotServed is getJSON's error for a path the server does not have (404).
var errNotServed = errors.New("not served")

// errClustersInError makes `horizon status` exit non-zero for scripts.
var errClustersInError = errors.New("clusters in error")

func statusCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("status", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	address := fs.String("address", "localhost:15014", "host:port of a running horizon serve's --http-address; a non-loopback address needs --token-file (see horizon serve --debug-access)")
	output := fs.StringP("output", "o", "table", "output format: table or json")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the answer")
	tokenFlag := fs.String("token", "", "bearer token for a horizon reached at a non-loopback address (visible to other local users in the process list: prefer --token-file)")
	tokenFile := fs.String("token-file", "", "file holding the bearer token for a horizon reached at a non-loopback address, e.g. from kubectl create token --audience horizon")
	if ok, err := parseFlags(fs, args); !ok {
		return err
	}
	if *output != "table" && *output != "json" {
		return usageError{fmt.Errorf("--output: must be table or json, got %q", *output)}
	}
	token, err := statusToken(*tokenFlag, *tokenFile)
	if err != nil {
		return usageError{err}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var rep statusReport
	var clusterz app.ClusterzResponse
	for _, g := range []struct {
		path     string
		into     any
		optional bool // a horizon serve older than this command may not have it
	}{{"/debug/clusterz", &clusterz, false}, {"/debug/networkz", &rep.Networks, false}, {"/debug/syncz", &rep.Proxies, false}, {"/debug/mcsz", &rep.MCS, true}} {
		if err := getJSON(ctx, "http://"+*address+g.path, token, g.into); err != nil {
			if g.optional && errors.Is(err, errNotServed) {
				continue
			}
			return err
		}
	}
	rep.Clusters, rep.Secrets = clusterz.Clusters, clusterz.Secrets

	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printStatus(stdout, rep)
	}
	bad, expired := 0, 0
	for _, c := range rep.Clusters {
		if c.State == clusterregistry.StateError || c.State == clusterregistry.StateTimedOut || c.State == clusterregistry.StateStale {
			bad++
		}
	}
	for _, s := range rep.Secrets {
		if s.CredentialState == secrets.CredentialExpired {
			expired++
		}
	}
	switch {
	case bad > 0 && expired > 0:
		return fmt.Errorf("%d cluster(s) in error, timed out or unreachable, %d remote credential(s) expired: %w", bad, expired, errClustersInError)
	case bad > 0:
		return fmt.Errorf("%d cluster(s) in error, timed out or unreachable: %w", bad, errClustersInError)
	case expired > 0:
		return fmt.Errorf("%d remote credential(s) expired: %w", expired, errClustersInError)
	}
	return nil
}

// maxTokenBytes bounds the token `horizon status` reads; the server refuses longer
// ones.
const maxTokenBytes = debugauth.DefaultMaxTokenBytes

// statusToken returns the bearer token of --token or --token-file, or "" for none.
func statusToken(token, file string) (string, error) {
	switch {
	case token != "" && file != "":
		return "", errors.New("--token and --token-file: give one or the other")
	case file != "":
		f, err := os.Open(file)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+2))
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
		if token == "" {
			return "", fmt.Errorf("--token-file: %s holds no token", file)
		}
	}
	flag := "--token"
	if file != "" {
		flag = "--token-file"
	}
	if len(token) > maxTokenBytes {
		return "", fmt.Errorf("%s: token longer than %d bytes", flag, maxTokenBytes)
	}
	if strings.ContainsAny(token, " \t\r\n") {
		return "", fmt.Errorf("%s: the token must be one word without spaces or line breaks", flag)
	}
	return token, nil
}

func getJSON(ctx context.Context, url, token string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("reach horizon at %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		err := fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
		if resp.StatusCode == http.StatusNotFound {
			err = fmt.Errorf("%w: %w", errNotServed, err)
		}
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		return fmt.Errorf("decode %s: %w", url, err)
	}
	return nil
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

// credentialLeft is the CREDENTIAL column: the time left before the cluster's remote
// credential expires ("23h", "6d", "45m"), "(warning)" added within
// --credential-expiry-warning, "expired" once past, "-" when unknown or not a remote
// cluster.
func credentialLeft(k *secrets.KeyStatus, now time.Time) string {
	if k == nil || k.CredentialExpiry.IsZero() {
		return "-"
	}
	if k.CredentialState == secrets.CredentialExpired {
		return "expired"
	}
	left := k.CredentialExpiry.Sub(now)
	var out string
	switch {
	case left <= 0:
		// Expired by this host's clock, not yet by the server's.
		out = "0m"
	case left >= 48*time.Hour:
		out = fmt.Sprintf("%dd", int(left/(24*time.Hour)))
	case left >= time.Hour:
		out = fmt.Sprintf("%dh", int(left/time.Hour))
	default:
		out = fmt.Sprintf("%dm", int(left/time.Minute))
	}
	if k.CredentialState == secrets.CredentialExpiring {
		out += " (warning)"
	}
	return out
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printStatus writes the report as aligned tables.
// scope describes which namespaces a cluster watches: its discovery selectors ("*"
// for all), "(secret)" when its remote Secret sets them, and the namespaces watched
// one by one.
func scope(s clusterregistry.ScopeStatus) string {
	out := s.Selectors
	if out == "" {
		out = "*"
	}
	if s.Override {
		out += " (secret)"
	}
	if s.NamespaceWatches > 0 {
		out += fmt.Sprintf(" [%d namespaces]", s.NamespaceWatches)
	}
	return out
}

// apiRequests sums what Horizon sent a cluster's API server: total requests, and
// those that got no 2xx answer.
func apiRequests(a clusterregistry.APIRequests) string {
	if failed := a.Failed(); failed > 0 {
		return fmt.Sprintf("%d (%d failed)", a.Total(), failed)
	}
	return fmt.Sprint(a.Total())
}

func printStatus(out io.Writer, rep statusReport) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CLUSTERS")
	fmt.Fprintln(w, "ID\tSOURCE\tSERVER\tSTATE\tSERVICES\tENDPOINTS\tSCOPE\tAPI REQUESTS\tCREDENTIAL\tLAST SYNC\tLAST ERROR")
	// The key each remote cluster's credential came from.
	creds := map[string]*secrets.KeyStatus{}
	for i, s := range rep.Secrets {
		if s.CredentialState != "" {
			creds[string(s.Cluster)] = &rep.Secrets[i]
		}
	}
	now := time.Now()
	for _, c := range rep.Clusters {
		state := string(c.State)
		if c.Waiting {
			state += " (waiting for its turn to list)"
		}
		if c.Withdrawn {
			state += " (endpoints withdrawn)"
		} else if c.Stale {
			state += " (serving last known, since " + ago(c.StaleSince) + ")"
		}
		if c.Rotation != nil {
			state += " (rotating: " + string(c.Rotation.State) + ")"
		}
		if e := c.ServiceExports; e != nil && e.Unavailable != "" {
			state += " (MCS: exports nothing, see /debug/clusterz)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.Source, c.Server, state, c.Services, c.Endpoints, scope(c.Scope),
			apiRequests(c.APIRequests), credentialLeft(creds[string(c.ID)], now), ago(c.SyncedAt), dash(c.LastError))
	}

	fmt.Fprintln(w, "\nNETWORKS\tENDPOINTS FROM\tGATEWAYS")
	rules := networkRules(rep.Networks.MeshNetworks)
	gws := map[string][]string{}
	for _, g := range rep.Networks.Gateways {
		gws[string(g.Network)] = append(gws[string(g.Network)], fmt.Sprintf("%s:%d", g.Address, g.Port))
	}
	var names []string
	for n := range rules {
		names = append(names, n)
	}
	for n := range gws {
		if _, ok := rules[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "%s\t%s\t%s\n", n, dash(strings.Join(rules[n], ", ")), dash(strings.Join(gws[n], ", ")))
	}

	fmt.Fprintln(w, "\nGATEWAY\tNETWORK\tCLUSTER\tFROM")
	for _, g := range rep.Networks.Gateways {
		fmt.Fprintf(w, "%s:%d\t%s\t%s\t%s\n", g.Address, g.Port, g.Network, dash(string(g.Cluster)), g.Source)
	}

	fmt.Fprintln(w, "\nPROXIES (ROLE)\tNETWORK\tCONNECTED\tUP TO DATE")
	type key struct{ role, network string }
	counts := map[key][2]int{}
	for _, p := range rep.Proxies {
		k := key{string(p.Role), dash(string(p.Network))}
		c := counts[k]
		c[0]++
		if p.UpToDate {
			c[1]++
		}
		counts[k] = c
	}
	keys := make([]key, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b key) int { return strings.Compare(a.role+"/"+a.network, b.role+"/"+b.network) })
	for _, k := range keys {
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\n", k.role, k.network, counts[k][0], counts[k][1])
	}
	w.Flush()

	fmt.Fprintln(out)
	if r := rep.Networks.Status.Rejected; r != "" {
		fmt.Fprintf(out, "last meshNetworks rejection (%s): %s\n", ago(rep.Networks.Status.RejectedAt), r)
	} else {
		fmt.Fprintf(out, "meshNetworks: %s, generation %d, no rejected edit\n", dash(rep.Networks.Status.Source), rep.Networks.Status.Generation)
	}
	for _, s := range rep.Secrets {
		switch s.CredentialState {
		case secrets.CredentialExpiring:
			fmt.Fprintf(out, "remote secret %s key %q: credential (%s) expires at %s: rotate it (create-remote-secret, then apply)\n",
				s.Secret, s.Key, s.CredentialSource, s.CredentialExpiry.UTC().Format(time.RFC3339))
		case secrets.CredentialExpired:
			fmt.Fprintf(out, "remote secret %s key %q: credential (%s) expired at %s: the remote cluster refuses it; rotate it (create-remote-secret, then apply)\n",
				s.Secret, s.Key, s.CredentialSource, s.CredentialExpiry.UTC().Format(time.RFC3339))
		}
		switch {
		case s.State == secrets.KeyAccepted:
		case s.Key == "":
			fmt.Fprintf(out, "remote secret %s: %s: %s\n", s.Secret, s.State, s.Error)
		default:
			fmt.Fprintf(out, "remote secret %s key %q: %s: %s\n", s.Secret, s.Key, s.State, s.Error)
		}
	}
	for _, n := range rep.Networks.Notes {
		fmt.Fprintf(out, "%s\n", n)
	}
	for _, p := range rep.Networks.GatewayProblems {
		fmt.Fprintf(out, "Gateway resource ignored: %s\n", p)
	}
	printExportConflicts(out, rep.MCS)
}

// printExportConflicts lists, in MCS mode, the exports whose values lose to an
// older export's, and how the ServiceExport status writes fare.
func printExportConflicts(out io.Writer, m app.MCSzResponse) {
	if !m.Enabled {
		return
	}
	fmt.Fprintf(out, "\nMCS: %d exported services, %d with conflicting exports\n", m.ExportedServices, m.Conflicted)
	if len(m.Services) > 0 {
		w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "SERVICE\tCLUSTER\tREASON\tPROPERTY\tVALUE\tUSED (FROM)")
		for _, s := range m.Services {
			for _, c := range s.Conflicts {
				fmt.Fprintf(w, "%s/%s\t%s\t%s\t%s\t%s\t%s (%s)\n", s.Namespace, s.Name, c.Cluster, c.Reason, c.Property, c.Value, c.WinnerValue, c.Winner)
			}
			if more := s.Total - len(s.Conflicts); more > 0 {
				fmt.Fprintf(w, "%s/%s\t…\t%d more\t\t\t\n", s.Namespace, s.Name, more)
			}
		}
		w.Flush()
		if more := m.Conflicted - len(m.Services); more > 0 {
			fmt.Fprintf(out, "… and %d more services with conflicts (see /debug/mcsz)\n", more)
		}
	}
	if m.Writing {
		fmt.Fprintf(out, "ServiceExport status writes: %d ok, %d failed", m.WritesOK, m.WritesFailed)
		if m.LastError != "" {
			fmt.Fprintf(out, "; last failure (%s): %s", ago(m.LastErrorAt), m.LastError)
		}
		fmt.Fprintln(out)
	}
}

// networkRules reads "fromRegistry: x" / "fromCidr: y" per network from the
// meshNetworks JSON.
func networkRules(raw json.RawMessage) map[string][]string {
	var mn struct {
		Networks map[string]struct {
			Endpoints []struct {
				FromRegistry string `json:"fromRegistry"`
				FromCidr     string `json:"fromCidr"`
			} `json:"endpoints"`
		} `json:"networks"`
	}
	out := map[string][]string{}
	if json.Unmarshal(raw, &mn) != nil {
		return out
	}
	for name, n := range mn.Networks {
		var rules []string
		for _, e := range n.Endpoints {
			if e.FromRegistry != "" {
				rules = append(rules, "fromRegistry "+e.FromRegistry)
			}
			if e.FromCidr != "" {
				rules = append(rules, "fromCidr "+e.FromCidr)
			}
		}
		out[name] = rules
	}
	return out
}
