package clusterregistry

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// maxErrorText bounds the error text kept for a cluster.
const maxErrorText = 512

var (
	// listWatchPrefix is the reflector's own description of what failed.
	listWatchPrefix = regexp.MustCompile(`^(failed to (list|watch) \*?[A-Za-z0-9_.]+): `)
	// userinfoRE finds credentials in URLs that transport errors quote.
	userinfoRE = regexp.MustCompile(`://[^/@\s"']*@`)
)

// knownReasons are the StatusReasons shown as they are; any other reason, which a
// remote server can make up, is left out.
var knownReasons = map[metav1.StatusReason]bool{
	metav1.StatusReasonUnauthorized: true, metav1.StatusReasonForbidden: true,
	metav1.StatusReasonNotFound: true, metav1.StatusReasonAlreadyExists: true,
	metav1.StatusReasonConflict: true, metav1.StatusReasonGone: true,
	metav1.StatusReasonInvalid: true, metav1.StatusReasonServerTimeout: true,
	metav1.StatusReasonStoreReadError: true, metav1.StatusReasonTimeout: true,
	metav1.StatusReasonTooManyRequests: true, metav1.StatusReasonBadRequest: true,
	metav1.StatusReasonMethodNotAllowed: true, metav1.StatusReasonNotAcceptable: true,
	metav1.StatusReasonRequestEntityTooLarge: true, metav1.StatusReasonUnsupportedMediaType: true,
	metav1.StatusReasonInternalError: true, metav1.StatusReasonExpired: true,
	metav1.StatusReasonServiceUnavailable: true,
}

// errorText returns err's text fit for logs and status: an answer from the remote
// API server becomes its status code and reason only, never the body (which the
// remote controls); other errors keep their text without token and URL userinfo,
// truncated to maxErrorText.
func errorText(err error, token string) string {
	var msg string
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		s := st.Status()
		msg = fmt.Sprintf("remote API server answered %d", s.Code)
		if text := http.StatusText(int(s.Code)); text != "" {
			msg += " " + text
		}
		if knownReasons[s.Reason] && string(s.Reason) != strings.ReplaceAll(http.StatusText(int(s.Code)), " ", "") {
			msg += " (" + string(s.Reason) + ")"
		}
		if m := listWatchPrefix.FindStringSubmatch(err.Error()); m != nil {
			msg = m[1] + ": " + msg
		}
	} else {
		msg = err.Error()
	}
	if token != "" {
		msg = strings.ReplaceAll(msg, token, "[redacted]")
	}
	msg = userinfoRE.ReplaceAllString(msg, "://")
	if len(msg) > maxErrorText {
		msg = msg[:maxErrorText] + "…"
	}
	return msg
}
