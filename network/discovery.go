package network

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"
)

// AnnotationDiscoverySelectors, on a remote Secret, replaces the mesh's
// discoverySelectors for the clusters of that Secret. It is Horizon's own; Istio has
// nothing like it. Its value is a YAML or JSON list of label selectors, the format of
// MeshConfig discoverySelectors; an empty list selects every namespace.
const AnnotationDiscoverySelectors = "horizon.io/discovery-selectors"

// Bounds on what a mesh config or a Secret annotation may hold.
const (
	// MaxDiscoverySelectors bounds the selectors of one list.
	MaxDiscoverySelectors = 64
	// MaxDiscoverySelectorsBytes bounds the size of the annotation's value.
	MaxDiscoverySelectorsBytes = 16 << 10
)

// DiscoverySelectors says which namespaces of a cluster Horizon watches: those whose
// labels match at least one selector. No selectors (a nil or empty value) selects every
// namespace. The system namespace is always watched whatever the selectors say; that
// rule belongs to the caller, which knows the namespace. Values are immutable.
type DiscoverySelectors struct {
	raw  []metav1.LabelSelector
	sels []labels.Selector
}

// All reports whether d selects every namespace.
func (d *DiscoverySelectors) All() bool { return d == nil || len(d.sels) == 0 }

// Selects reports whether a namespace with these labels is selected.
func (d *DiscoverySelectors) Selects(nsLabels map[string]string) bool {
	if d.All() {
		return true
	}
	set := labels.Set(nsLabels)
	for _, s := range d.sels {
		if s.Matches(set) {
			return true
		}
	}
	return false
}

// Equal reports whether d and o select the same way (as written; two spellings of
// one selector differ).
func (d *DiscoverySelectors) Equal(o *DiscoverySelectors) bool {
	if d.All() || o.All() {
		return d.All() == o.All()
	}
	return reflect.DeepEqual(d.raw, o.raw)
}

// String describes the selectors in label-selector syntax, "|" between them; "*" for
// every namespace.
func (d *DiscoverySelectors) String() string {
	if d.All() {
		return "*"
	}
	parts := make([]string, len(d.sels))
	for i, s := range d.sels {
		parts[i] = s.String()
	}
	return strings.Join(parts, " | ")
}

// CompileDiscoverySelectors validates in (path names the list in errors, e.g.
// "discoverySelectors") and compiles it. Every problem is reported with its field path,
// e.g. "discoverySelectors[1].matchExpressions[0].operator: Unsupported value".
func CompileDiscoverySelectors(in []metav1.LabelSelector, path *field.Path) (*DiscoverySelectors, error) {
	if len(in) > MaxDiscoverySelectors {
		return nil, field.TooMany(path, len(in), MaxDiscoverySelectors)
	}
	var errs field.ErrorList
	d := &DiscoverySelectors{raw: in}
	for i := range in {
		p := path.Index(i)
		if es := metav1validation.ValidateLabelSelector(&in[i], metav1validation.LabelSelectorValidationOptions{}, p); len(es) > 0 {
			errs = append(errs, es...)
			continue
		}
		s, err := metav1.LabelSelectorAsSelector(&in[i])
		if err != nil {
			errs = append(errs, field.Invalid(p, in[i].String(), err.Error()))
			continue
		}
		d.sels = append(d.sels, s)
	}
	if len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	return d, nil
}

// MeshConfig is what Horizon reads of Istio's MeshConfig (the mesh key of the istio
// ConfigMap).
type MeshConfig struct {
	// DiscoverySelectors scope the namespaces watched in every cluster.
	DiscoverySelectors *DiscoverySelectors
	// ClusterLocal is the hosts serviceSettings make cluster-local.
	ClusterLocal *ClusterLocalHosts
}

// ParseMeshConfig parses Istio's MeshConfig YAML or JSON and validates what Horizon
// reads of it. Fields Horizon does not read are accepted when MeshConfig knows them and
// ignored otherwise, so that a mesh config written for a newer Istio still loads; a
// field of the wrong type is an error. Empty input is an empty configuration.
func ParseMeshConfig(data []byte) (*MeshConfig, error) {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, fmt.Errorf("parse mesh config: %w", err)
	}
	if js = bytes.TrimSpace(js); len(js) == 0 || string(js) == "null" {
		return &MeshConfig{}, nil
	}
	mc := &meshv1alpha1.MeshConfig{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(js, mc); err != nil {
		return nil, fmt.Errorf("parse mesh config: %s", protoPosition.ReplaceAllString(err.Error(), ""))
	}
	in := make([]metav1.LabelSelector, len(mc.GetDiscoverySelectors()))
	for i, s := range mc.GetDiscoverySelectors() {
		in[i].MatchLabels = s.GetMatchLabels()
		for _, e := range s.GetMatchExpressions() {
			in[i].MatchExpressions = append(in[i].MatchExpressions, metav1.LabelSelectorRequirement{
				Key: e.GetKey(), Operator: metav1.LabelSelectorOperator(e.GetOperator()), Values: e.GetValues(),
			})
		}
	}
	sels, err := CompileDiscoverySelectors(in, field.NewPath("discoverySelectors"))
	if err != nil {
		return nil, fmt.Errorf("invalid mesh config: %w", err)
	}
	local, err := compileServiceSettings(mc.GetServiceSettings(), field.NewPath("serviceSettings"))
	if err != nil {
		return nil, fmt.Errorf("invalid mesh config: %w", err)
	}
	return &MeshConfig{DiscoverySelectors: sels, ClusterLocal: local}, nil
}

// ParseDiscoverySelectors parses the value of AnnotationDiscoverySelectors: a YAML or
// JSON list of label selectors. Unknown fields are errors; errors name the annotation
// and the field path.
func ParseDiscoverySelectors(value string) (*DiscoverySelectors, error) {
	path := field.NewPath("metadata", "annotations").Key(AnnotationDiscoverySelectors)
	if len(value) > MaxDiscoverySelectorsBytes {
		return nil, field.TooLong(path, "", MaxDiscoverySelectorsBytes)
	}
	var in []metav1.LabelSelector
	if err := yaml.UnmarshalStrict([]byte(value), &in); err != nil {
		return nil, fmt.Errorf("%s: want a list of label selectors: %w", path, err)
	}
	return CompileDiscoverySelectors(in, path)
}
