package eds

import "google.golang.org/protobuf/proto"

// marshal encodes one resource the way it is sent to proxies: deterministically, so
// that equal resources give equal bytes.
func marshal(m proto.Message) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}
