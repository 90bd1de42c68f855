// kepler_go_client talks to the estimator's unix socket exactly as Kepler's Go sidecar
// client does (v0.6..v0.9, and the 2022 prototype): net.Dial("unix"), one Write of the
// JSON request, one Read into a 4096-byte buffer, Close, json.Unmarshal. It reads the
// request from stdin and prints one JSON line the test checks:
//
//	{"bytes": <n read>, "error": "<dial/write/read/unmarshal error>", "reply": <decoded>}
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

// The v0.9 reply, as Kepler declares it.
type powerResponse struct {
	Powers    map[string][]float64 `json:"powers"`
	Msg       string               `json:"msg"`
	CoreRatio float64              `json:"core_ratio"`
}

// The 2022 prototype's reply.
type powerResponse2022 struct {
	Powers []float64 `json:"powers"`
	Msg    string    `json:"msg"`
}

type result struct {
	Bytes int         `json:"bytes"`
	Error string      `json:"error"`
	Reply interface{} `json:"reply"`
}

func main() {
	socket := flag.String("socket", "/tmp/estimator.sock", "unix socket of the estimator")
	shape := flag.String("shape", "v09", "reply shape to decode: v09 or 2022")
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
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	conn.Close()
	out.Bytes = n
	if err != nil {
		out.Error = "read: " + err.Error()
		return
	}
	if *shape == "2022" {
		var r powerResponse2022
		if err = json.Unmarshal(buf[:n], &r); err != nil {
			out.Error = "unmarshal: " + err.Error()
			return
		}
		out.Reply = r
		return
	}
	var r powerResponse
	if err = json.Unmarshal(buf[:n], &r); err != nil {
		out.Error = "unmarshal: " + err.Error()
		return
	}
	out.Reply = r
}
