//go:build vtprotobuf

package eds

import (
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// TestMarshalHasGeneratedEncoder fails if, built with the tag, ClusterLoadAssignment
// no longer has the generated encoder marshal looks for (say, after an update of the
// envoy protos renamed it): marshal would fall back without a word.
func TestMarshalHasGeneratedEncoder(t *testing.T) {
	if _, ok := any(&endpointv3.ClusterLoadAssignment{}).(vtMarshaler); !ok {
		t.Fatal("ClusterLoadAssignment has no MarshalVTStrict with the vtprotobuf tag")
	}
}
