// SPDX-License-Identifier: Apache-2.0

// kepler_go_client talks to the estimator's unix socket exactly as Kepler's Go clients do,
// and decodes the reply into structs with the field types and JSON tags of Kepler's own
// (written here from the facts in KEPLER.md section 4, not copied):
//
//   - v09: Kepler v0.6..v0.9 (pkg/model/estimator/sidecar/estimate.go): one Write, one Read
//     into a 4096-byte buffer, json.Unmarshal into ComponentPowerResponse
//     (powers map[string][]float64, msg, core_ratio); an Unmarshal error is the call's error.
//   - 2022: the 2022 prototype (PR #104) and Kepler v0.3 (GetDynamicPower): one Read into a
//     1024-byte buffer, json.Unmarshal into PowerResponse (powers a list); an Unmarshal
//     error makes the call return an empty list.
//
// It reads the request from stdin and prints one JSON line the test checks:
//
//	{"bytes": <n read>, "error": "<dial/write/read/unmarshal error>", "rows": <rows decoded>,
//	 "components": <v09: components decoded>, "reply": <decoded>}
//
// Standard library only.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
)

// ComponentPowerResponse is Kepler v0.9's reply type.
type ComponentPowerResponse struct {
	Powers    map[string][]float64 `json:"powers"`
	Message   string               `json:"msg"`
	CoreRatio float64              `json:"core_ratio,omitempty"`
}

// PowerResponse is the 2022 prototype's reply type (Kepler v0.3 has []float64: the same
// decode outcome for the float32 values the estimator writes).
type PowerResponse struct {
	Powers  []float32 `json:"powers"`
	Message string    `json:"msg"`
}

type result struct {
	Bytes      int         `json:"bytes"`
	Error      string      `json:"error"`
	Rows       int         `json:"rows"`
	Components int         `json:"components"`
	Reply      interface{} `json:"reply"`
}

func main() {
	socket := flag.String("socket", "/tmp/estimator.sock", "unix socket of the estimator")
	shape := flag.String("shape", "v09", "client generation: v09 (4096-byte read) or 2022 (1024)")
	flag.Parse()

	request, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reading stdin:", err)
		os.Exit(2)
	}
	out := result{}
	defer func() {
		line, _ := json.Marshal(out)
		fmt.Println(string(line))
	}()

	conn, err := net.Dial("unix", *socket)
	if err != nil {
		out.Error = "dial: " + err.Error()
		return
	}
	if _, err = conn.Write(request); err != nil {
		conn.Close()
		out.Error = "write: " + err.Error()
		return
	}
	size := 4096
	if *shape == "2022" {
		size = 1024
	}
	buf := make([]byte, size)
	n, err := conn.Read(buf)
	conn.Close()
	out.Bytes = n
	if err != nil {
		out.Error = "read: " + err.Error()
		return
	}
	if *shape == "2022" {
		var r PowerResponse
		if err = json.Unmarshal(buf[:n], &r); err != nil {
			out.Error = "unmarshal: " + err.Error()
			return
		}
		out.Rows = len(r.Powers)
		out.Reply = r
		return
	}
	var r ComponentPowerResponse
	if err = json.Unmarshal(buf[:n], &r); err != nil {
		out.Error = "unmarshal: " + err.Error()
		return
	}
	// As Kepler's GetComponentsPower counts rows: the length of any component's list.
	for _, vals := range r.Powers {
		out.Rows = len(vals)
		break
	}
	out.Components = len(r.Powers)
	out.Reply = r
}
