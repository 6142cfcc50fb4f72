package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/yaml"

	"github.com/horizon-mesh/horizon/network"
)

const (
	// readerRole is the ClusterRole granted to the reader service account: read access
	// to what Horizon watches in a remote cluster, nothing more.
	readerRole = "horizon-reader"
	// defaultReaderServiceAccount is created, with readerRole, when
	// --service-account is not given.
	defaultReaderServiceAccount = "horizon-reader-service-account"
	// remoteSecretPrefix starts the default name of the printed Secret.
	remoteSecretPrefix = "istio-remote-secret-"
	// minTokenTTL is the shortest expiration the TokenRequest API accepts.
	minTokenTTL = 10 * time.Minute
	// maxTokenTTL is the longest expiration the TokenRequest API accepts (2^32
	// seconds); an API server may cap it lower (--service-account-max-token-expiration).
	maxTokenTTL = (1 << 32) * time.Second
	// tokenPollInterval is how often the token Secret is read while waiting for the
	// cluster to fill it in.
	tokenPollInterval = 250 * time.Millisecond
)

// readerRules are the rules of readerRole.
func readerRules() []rbacv1.PolicyRule {
	read := []string{"get", "list", "watch"}
	return []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"services", "pods", "nodes", "namespaces"}, Verbs: read},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: read},
		// ServiceExports, read in MCS mode (--mcs).
		{APIGroups: []string{"multicluster.x-k8s.io"}, Resources: []string{"serviceexports"}, Verbs: []string{"list", "watch"}},
	}
}

// remoteSecretOptions is everything `horizon create-remote-secret` takes from its flags.
type remoteSecretOptions struct {
	kubeconfig string
	context    string
	name       string
	namespace  string
	// secretNamespace is the printed Secret's namespace; namespace when empty.
	secretNamespace string
	serviceAccount  string
	// explicitServiceAccount is set when --service-account was given: that account must
	// already exist and is neither created nor granted anything.
	explicitServiceAccount bool
	server                 string
	secretName             string
	// tokenWait bounds the wait for the cluster to fill in the token Secret before
	// falling back to the TokenRequest API.
	tokenWait time.Duration
	// tokenTTL is the lifetime asked of the TokenRequest API in that fallback.
	tokenTTL time.Duration
	// tokenDuration, when set, asks the TokenRequest API for a bound token of this
	// lifetime instead of using a token Secret.
	tokenDuration time.Duration
	// explicitTokenTTL is set when --token-ttl was given.
	explicitTokenTTL bool
}

func (o *remoteSecretOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the remote cluster (this or --context is required)")
	fs.StringVar(&o.context, "context", "", "kubeconfig context of the remote cluster (empty: the kubeconfig's current context)")
	fs.StringVar(&o.name, "name", "", "cluster name, the Secret's data key (empty: the UID of the remote kube-system namespace)")
	fs.StringVar(&o.namespace, "namespace", "istio-system", "namespace of the reader service account in the remote cluster, and of the printed Secret unless --secret-namespace is set")
	fs.StringVar(&o.secretNamespace, "secret-namespace", "", "namespace of the printed Secret in the config cluster: Horizon's --remote-secrets-namespace when it reads remote secrets from a namespace of their own (empty: --namespace)")
	fs.StringVar(&o.serviceAccount, "service-account", defaultReaderServiceAccount,
		"reader service account in --namespace; the default one is created with read-only RBAC, a named one must already exist and is used as it is")
	fs.StringVar(&o.server, "server", "", "API server address written into the kubeconfig (empty: the remote kubeconfig's server)")
	fs.StringVar(&o.secretName, "secret-name", "", `name of the printed Secret (empty: "`+remoteSecretPrefix+`<name>")`)
	fs.DurationVar(&o.tokenWait, "token-wait", 30*time.Second, "how long to wait for the cluster to fill in the service account's token Secret")
	fs.DurationVar(&o.tokenTTL, "token-ttl", 365*24*time.Hour, "lifetime of the time-limited token used when the token Secret is not filled in")
	fs.DurationVar(&o.tokenDuration, "token-duration", 0,
		"issue a bound token of this lifetime through the TokenRequest API (at least 10m; the API server may cap it at its --service-account-max-token-expiration) "+
			"instead of a non-expiring token Secret; run again and apply before it expires (0: token Secret)")
}

// validate checks what can be checked before talking to the cluster.
func (o *remoteSecretOptions) validate() error {
	var errs []error
	if o.kubeconfig == "" && o.context == "" {
		errs = append(errs, errors.New("--kubeconfig or --context is required: it names the remote cluster"))
	}
	if msgs := validation.IsDNS1123Label(o.namespace); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--namespace %q: %s", o.namespace, strings.Join(msgs, "; ")))
	}
	if o.secretNamespace != "" {
		if msgs := validation.IsDNS1123Label(o.secretNamespace); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--secret-namespace %q: %s", o.secretNamespace, strings.Join(msgs, "; ")))
		}
	}
	if msgs := validation.IsDNS1123Subdomain(o.serviceAccount); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--service-account %q: %s", o.serviceAccount, strings.Join(msgs, "; ")))
	}
	if o.name != "" {
		if err := validateClusterName(o.name); err != nil {
			errs = append(errs, fmt.Errorf("--name: %w", err))
		}
	}
	if o.secretName != "" {
		if msgs := validation.IsDNS1123Subdomain(o.secretName); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--secret-name %q: %s", o.secretName, strings.Join(msgs, "; ")))
		}
	}
	if o.server != "" {
		if u, err := url.Parse(o.server); err != nil {
			errs = append(errs, fmt.Errorf("--server: %w", err))
		} else if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--server %q: must be an http or https URL with a host", o.server))
		}
	}
	if o.tokenWait < 0 {
		errs = append(errs, errors.New("--token-wait: must not be negative"))
	}
	if o.tokenTTL < minTokenTTL {
		errs = append(errs, fmt.Errorf("--token-ttl: must be at least %s", minTokenTTL))
	} else if o.tokenTTL > maxTokenTTL {
		errs = append(errs, fmt.Errorf("--token-ttl: must be at most %s", maxTokenTTL))
	}
	if o.tokenDuration != 0 && (o.tokenDuration < minTokenTTL || o.tokenDuration > maxTokenTTL) {
		errs = append(errs, fmt.Errorf("--token-duration %s: must be 0 (token Secret) or between %s (the TokenRequest API's minimum) and %s", o.tokenDuration, minTokenTTL, maxTokenTTL))
	}
	if o.tokenDuration != 0 && o.explicitTokenTTL {
		errs = append(errs, errors.New("--token-duration and --token-ttl: give one; --token-ttl is the lifetime of the fallback used when the token Secret is not filled in"))
	}
	return errors.Join(errs...)
}

// validateClusterName checks that name can be the Secret's data key and part of its name.
func validateClusterName(name string) error {
	if msgs := validation.IsConfigMapKey(name); len(msgs) > 0 {
		return fmt.Errorf("%q is not a valid Secret key: %s", name, strings.Join(msgs, "; "))
	}
	return nil
}

// createRemoteSecret is `horizon create-remote-secret`: it prepares a read-only
// identity in the remote cluster and prints, on stdout alone, a remote Secret for the
// config cluster. Warnings go to stderr.
func createRemoteSecret(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o remoteSecretOptions
	fs := pflag.NewFlagSet("create-remote-secret", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	o.addFlags(fs)
	if ok, err := parseFlags(fs, args); !ok {
		return err
	}
	o.explicitServiceAccount = fs.Changed("service-account")
	o.explicitTokenTTL = fs.Changed("token-ttl")
	if err := o.validate(); err != nil {
		return usageError{err}
	}
	cfg, err := configClusterConfig(o.kubeconfig, o.context)
	if err != nil {
		return usageError{err}
	}
	cfg = rest.CopyConfig(cfg)
	cfg.WarningHandler = rest.NewWarningWriter(stderr, rest.WarningWriterOptions{Deduplicate: true})
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("build remote cluster client: %w", err)
	}
	secret, err := o.remoteSecret(ctx, client, cfg, stderr)
	if err != nil {
		return err
	}
	out, err := yaml.Marshal(secret)
	if err != nil {
		return fmt.Errorf("encode Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	if _, err := stdout.Write(out); err != nil {
		return fmt.Errorf("write Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	return nil
}

// remoteSecret ensures the reader identity in the remote cluster reached through cs
// and cfg, and returns the remote Secret holding a kubeconfig for it.
func (o *remoteSecretOptions) remoteSecret(ctx context.Context, cs kubernetes.Interface, cfg *rest.Config, stderr io.Writer) (*corev1.Secret, error) {
	name := o.name
	if name == "" {
		ns, err := cs.CoreV1().Namespaces().Get(ctx, metav1.NamespaceSystem, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("read namespace %s for the default cluster name (or set --name): %w", metav1.NamespaceSystem, err)
		}
		name = string(ns.UID)
		if err := validateClusterName(name); err != nil {
			return nil, fmt.Errorf("default cluster name from namespace %s (set --name): %w", metav1.NamespaceSystem, err)
		}
	}
	secretName := o.secretName
	if secretName == "" {
		secretName = remoteSecretPrefix + name
		if msgs := validation.IsDNS1123Subdomain(secretName); len(msgs) > 0 {
			return nil, fmt.Errorf("default Secret name %q (set --secret-name): %s", secretName, strings.Join(msgs, "; "))
		}
	}

	if err := o.ensureReader(ctx, cs); err != nil {
		return nil, err
	}
	token, ca, err := o.readerToken(ctx, cs, stderr)
	if err != nil {
		return nil, err
	}
	if len(ca) == 0 {
		if ca, err = configCA(cfg); err != nil {
			return nil, err
		}
	}
	server := o.server
	if server == "" {
		server = cfg.Host
	}
	if isLoopbackServer(server) {
		fmt.Fprintf(stderr, "warning: the API server address %s is a loopback address; the config cluster may not reach it; use --server to set one it can reach\n", server)
	}

	kc := clientcmdapi.NewConfig()
	kc.Clusters[name] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca, TLSServerName: cfg.ServerName}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: token}
	kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	kc.CurrentContext = name
	kubeconfig, err := clientcmd.Write(*kc)
	if err != nil {
		return nil, fmt.Errorf("encode kubeconfig for cluster %q: %w", name, err)
	}
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        secretName,
			Namespace:   cmp.Or(o.secretNamespace, o.namespace),
			Labels:      map[string]string{network.LabelMultiCluster: "true"},
			Annotations: map[string]string{network.AnnotationCluster: name},
		},
		Type:       corev1.SecretTypeOpaque,
		StringData: map[string]string{name: string(kubeconfig)},
	}, nil
}

// ensureReader makes sure the reader service account exists. The default one is
// created, with its namespace, readerRole and a binding to it; a named one must exist.
func (o *remoteSecretOptions) ensureReader(ctx context.Context, cs kubernetes.Interface) error {
	ns, sa := o.namespace, o.serviceAccount
	if o.explicitServiceAccount {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, sa, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("service account %s/%s does not exist in the remote cluster: create it with read access, or leave out --service-account to have %s created", ns, sa, defaultReaderServiceAccount)
		}
		if err != nil {
			return fmt.Errorf("read service account %s/%s: %w", ns, sa, err)
		}
		return nil
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create service account %s/%s: %w", ns, sa, err)
	}
	if err := ensureReaderRole(ctx, cs); err != nil {
		return err
	}
	return ensureReaderBinding(ctx, cs, ns, sa)
}

// ensureReaderRole creates readerRole, or resets its rules if they were changed.
func ensureReaderRole(ctx context.Context, cs kubernetes.Interface) error {
	roles := cs.RbacV1().ClusterRoles()
	_, err := roles.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: readerRole}, Rules: readerRules()}, metav1.CreateOptions{})
	if err == nil {
		return nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create cluster role %s: %w", readerRole, err)
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := roles.Get(ctx, readerRole, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.AggregationRule == nil && equality.Semantic.DeepEqual(cur.Rules, readerRules()) {
			return nil
		}
		cur.AggregationRule, cur.Rules = nil, readerRules()
		_, err = roles.Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("update cluster role %s: %w", readerRole, err)
	}
	return nil
}

// ensureReaderBinding binds readerRole to service account ns/sa.
func ensureReaderBinding(ctx context.Context, cs kubernetes.Interface, ns, sa string) error {
	bindings := cs.RbacV1().ClusterRoleBindings()
	name := readerRole + "-" + ns
	roleRef := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: readerRole}
	subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: sa}
	_, err := bindings.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    roleRef,
		Subjects:   []rbacv1.Subject{subject},
	}, metav1.CreateOptions{})
	if err == nil {
		return nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create cluster role binding %s: %w", name, err)
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := bindings.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.RoleRef != roleRef {
			return fmt.Errorf("it binds %s %s, not cluster role %s", cur.RoleRef.Kind, cur.RoleRef.Name, readerRole)
		}
		for _, s := range cur.Subjects {
			if s == subject {
				return nil
			}
		}
		cur.Subjects = append(cur.Subjects, subject)
		_, err = bindings.Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("update cluster role binding %s: %w", name, err)
	}
	return nil
}

// readerToken returns a token for the reader service account and, when the cluster
// supplied one with it, the CA bundle of the API server. It prefers the long-lived
// token of a service-account-token Secret; when the cluster does not fill that Secret
// in within tokenWait, it falls back to a time-limited token from the TokenRequest API
// and warns on stderr.
func (o *remoteSecretOptions) readerToken(ctx context.Context, cs kubernetes.Interface, stderr io.Writer) (token string, ca []byte, err error) {
	ns, sa := o.namespace, o.serviceAccount
	if o.tokenDuration > 0 {
		token, exp, err := o.requestToken(ctx, cs, o.tokenDuration)
		if err != nil {
			return "", nil, err
		}
		// The API server issues a shorter token than asked when the request is over its
		// --service-account-max-token-expiration; say so rather than let it expire early.
		if asked := time.Now().Add(o.tokenDuration); exp.Before(asked.Add(-time.Minute)) {
			fmt.Fprintf(stderr, "warning: asked for a token valid for %s, the API server issued one valid until %s (its --service-account-max-token-expiration caps tokens)\n",
				o.tokenDuration, exp.UTC().Format(time.RFC3339))
		}
		fmt.Fprintf(stderr, "token for service account %s/%s expires at %s: run create-remote-secret again and apply its output before then\n",
			ns, sa, exp.UTC().Format(time.RFC3339))
		return token, nil, nil
	}
	secrets := cs.CoreV1().Secrets(ns)
	name := sa + "-token"
	s, err := secrets.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: map[string]string{corev1.ServiceAccountNameKey: sa}},
		Type:       corev1.SecretTypeServiceAccountToken,
	}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		s, err = secrets.Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return "", nil, fmt.Errorf("create token Secret %s/%s: %w", ns, name, err)
	}
	if s.Type != corev1.SecretTypeServiceAccountToken || s.Annotations[corev1.ServiceAccountNameKey] != sa {
		return "", nil, fmt.Errorf("token Secret %s/%s exists but is not a service-account-token Secret of service account %s", ns, name, sa)
	}

	deadline := time.Now().Add(o.tokenWait)
	for !tokenFilled(s) && time.Now().Before(deadline) {
		t := time.NewTimer(min(tokenPollInterval, time.Until(deadline)))
		select {
		case <-ctx.Done():
			t.Stop()
			return "", nil, fmt.Errorf("wait for token Secret %s/%s: %w", ns, name, ctx.Err())
		case <-t.C:
		}
		if s, err = secrets.Get(ctx, name, metav1.GetOptions{}); err != nil {
			return "", nil, fmt.Errorf("read token Secret %s/%s: %w", ns, name, err)
		}
	}
	if tokenFilled(s) {
		return string(s.Data[corev1.ServiceAccountTokenKey]), s.Data[corev1.ServiceAccountRootCAKey], nil
	}

	token, exp, err := o.requestToken(ctx, cs, o.tokenTTL)
	if err != nil {
		return "", nil, err
	}
	fmt.Fprintf(stderr, "warning: the remote cluster did not fill in token Secret %s/%s within %s (is its token controller running?); "+
		"using a time-limited token from the TokenRequest API instead, which expires at %s: run create-remote-secret again before then\n",
		ns, name, o.tokenWait, exp.UTC().Format(time.RFC3339))
	return token, nil, nil
}

// requestToken asks the TokenRequest API (the service account's token subresource)
// for a token of the reader service account valid for ttl. The token is bound to the
// service account: deleting the account revokes it. It returns the token and when it
// expires, as the API server says.
func (o *remoteSecretOptions) requestToken(ctx context.Context, cs kubernetes.Interface, ttl time.Duration) (string, time.Time, error) {
	ns, sa := o.namespace, o.serviceAccount
	secs := int64(ttl / time.Second)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("request a token for service account %s/%s: %w", ns, sa, err)
	}
	if tr.Status.Token == "" {
		return "", time.Time{}, fmt.Errorf("request a token for service account %s/%s: the API server returned no token", ns, sa)
	}
	return tr.Status.Token, tr.Status.ExpirationTimestamp.Time, nil
}

// tokenFilled reports whether the cluster has filled in token Secret s.
func tokenFilled(s *corev1.Secret) bool {
	return len(s.Data[corev1.ServiceAccountTokenKey]) > 0 && len(s.Data[corev1.ServiceAccountRootCAKey]) > 0
}

// configCA returns the CA bundle that cfg trusts for the API server.
func configCA(cfg *rest.Config) ([]byte, error) {
	if len(cfg.CAData) > 0 {
		return cfg.CAData, nil
	}
	if cfg.CAFile != "" {
		b, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read the remote kubeconfig's certificate authority: %w", err)
		}
		if len(b) == 0 {
			return nil, fmt.Errorf("the remote kubeconfig's certificate authority file %s is empty", cfg.CAFile)
		}
		return b, nil
	}
	return nil, errors.New("no CA bundle for the remote API server: the token Secret has no ca.crt and the remote kubeconfig names no certificate authority")
}

// isLoopbackServer reports whether server, an API server URL, names this host, which
// another cluster cannot reach.
func isLoopbackServer(server string) bool {
	u, err := url.Parse(server)
	if err != nil {
		return false
	}
	h := strings.ToLower(u.Hostname())
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && (ip.IsLoopback() || ip.IsUnspecified())
}
