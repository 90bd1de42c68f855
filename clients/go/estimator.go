// SPDX-License-Identifier: Apache-2.0

// Package estimator is the Go client of estimatord, the shared-memory power estimation
// daemon, over its C library (libestimator_client.so, cgo). Its types are Kepler's
// estimator sidecar types (PowerRequest and ComponentPowerResponse, with Kepler v0.9's
// field names and JSON tags) and its GetPower has the 2022 prototype's signature, so code
// written against Kepler's client compiles against this package.
//
// Build flags: the source names only the header and the library (-lestimator_client).
// Installed under a standard prefix (/usr, /usr/local) that is enough. Elsewhere, or from
// a build tree, give the paths through the environment:
//
//	CGO_CFLAGS="$(pkg-config --cflags estimator-client)" \
//	CGO_LDFLAGS="$(pkg-config --libs estimator-client)" go build
//
// (from a build tree: CGO_CFLAGS=-I<src>/clients/c CGO_LDFLAGS=-L<build>/clients/c).
// A `#cgo pkg-config:` line would make pkg-config and the .pc file mandatory even where
// the compiler finds the library by itself, so it is not used.
package estimator

/*
#cgo LDFLAGS: -lestimator_client
#include <stdlib.h>
#include <estimator_client.h>
*/
import "C"

import (
	"fmt"
	"log"
	"math"
	"sync"
	"time"
	"unsafe"
)

// Code is the status of a failed call; the values are the daemon's wire codes.
type Code int

const (
	CodeOK                Code = 0
	CodeInvalidArgument   Code = 1
	CodeNotFound          Code = 2
	CodeMissingFeatures   Code = 3
	CodeInvalidValue      Code = 4
	CodeTooLarge          Code = 5
	CodeIncompatible      Code = 6
	CodeUnavailable       Code = 7
	CodeDeadlineExceeded  Code = 8
	CodeResourceExhausted Code = 9
	CodeInternal          Code = 10
	CodePermissionDenied  Code = 11
	CodeIntegrity         Code = 12
)

// String gives the code's stable name ("missing_features", ...).
func (c Code) String() string { return C.GoString(C.estimator_code_name(C.int(c))) }

// Error is every failure of this package: a code and a message for a human.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return e.Code.String() + ": " + e.Message }

func fromC(code C.int, err *C.estimator_error) error {
	if code == 0 {
		return nil
	}
	return &Error{Code: Code(code), Message: C.GoString(&err.message[0])}
}

func invalid(format string, args ...interface{}) error {
	return &Error{Code: CodeInvalidArgument, Message: fmt.Sprintf(format, args...)}
}

// PowerRequest is Kepler's request (v0.6 to v0.9 sidecar, estimate.go): the same fields,
// types and JSON tags, plus ModelName (not Kepler's; selects a model by name).
type PowerRequest struct {
	FloatFeatureNames           []string    `json:"metrics"`
	UsageValues                 [][]float64 `json:"values"`
	OutputType                  string      `json:"output_type"` // AbsPower or DynPower
	EnergySource                string      `json:"source"`      // rapl-sysfs (intel_rapl), acpi, ...
	SystemMetaDataFeatureNames  []string    `json:"system_features"`
	SystemMetaDataFeatureValues []string    `json:"system_values"`
	TrainerName                 string      `json:"trainer_name"`
	SelectFilter                string      `json:"filter"` // "mae:0.5;mape:10"
	ModelName                   string      `json:"model_name,omitempty"`
}

// ComponentPowerResponse is Kepler's reply: one value per request row for each
// component. Model is not Kepler's (Kepler's decoder ignores the key).
type ComponentPowerResponse struct {
	Powers    map[string][]float64 `json:"powers"`
	Message   string               `json:"msg"`
	CoreRatio float64              `json:"core_ratio,omitempty"`
	Model     ModelInfo            `json:"model"`
}

// ModelInfo describes the model that answered; MAE and MAPE are NaN when not published.
type ModelInfo struct {
	Name       string  `json:"name"`
	Trainer    string  `json:"trainer"`
	ModelClass string  `json:"model_class"`
	OutputType string  `json:"output_type"`
	Source     string  `json:"source"`
	MAE        float64 `json:"-"`
	MAPE       float64 `json:"-"`
}

// Options configure a Client. The zero value serves the daemon's default segment with a
// one-second deadline per call.
type Options struct {
	ShmName string        // "" = the daemon's default, "estimator-<user>"
	Timeout time.Duration // deadline of each call; 0 = 1 s
}

// Client talks to one daemon; safe for concurrent use. It attaches on first use and
// re-attaches by itself after a daemon restart.
type Client struct {
	c *C.estimator_client
}

// NewClient does not contact the daemon.
func NewClient(opts Options) (*Client, error) {
	var a arena
	defer a.free()
	var o C.estimator_client_options
	o.shm_name = a.str(opts.ShmName)
	o.timeout_ms = millis(opts.Timeout)
	var c *C.estimator_client
	var e C.estimator_error
	if err := fromC(C.estimator_client_create(&o, &c, &e), &e); err != nil {
		return nil, err
	}
	return &Client{c: c}, nil
}

// Close frees the client; it must not be used afterwards.
func (c *Client) Close() {
	if c != nil && c.c != nil {
		C.estimator_client_destroy(c.c)
		c.c = nil
	}
}

// ShmName is the segment the client talks to.
func (c *Client) ShmName() string { return C.GoString(C.estimator_client_shm_name(c.c)) }

// Ping returns nil when a daemon answers within timeout (0 = the client's timeout).
func (c *Client) Ping(timeout time.Duration) error {
	if c == nil || c.c == nil {
		return invalid("the client is closed")
	}
	var e C.estimator_error
	return fromC(C.estimator_ping(c.c, millis(timeout), &e), &e)
}

// Estimate answers a Kepler request. On failure the error is returned and also set in
// the response's Message (with Powers an empty map, never nil).
func (c *Client) Estimate(req *PowerRequest) (*ComponentPowerResponse, error) {
	resp := &ComponentPowerResponse{Powers: map[string][]float64{}, CoreRatio: 1}
	fail := func(err error) (*ComponentPowerResponse, error) {
		resp.Message = err.Error()
		return resp, err
	}
	if c == nil || c.c == nil {
		return fail(invalid("the client is closed"))
	}
	if req == nil {
		return fail(invalid("nil request"))
	}
	if len(req.SystemMetaDataFeatureNames) != len(req.SystemMetaDataFeatureValues) {
		return fail(invalid("%d system_features but %d system_values",
			len(req.SystemMetaDataFeatureNames), len(req.SystemMetaDataFeatureValues)))
	}
	var a arena
	defer a.free()
	var r C.estimator_request
	r.model_name = a.str(req.ModelName)
	r.trainer = a.str(req.TrainerName)
	r.output_type = a.str(req.OutputType)
	r.source = a.str(req.EnergySource)
	r.filter = a.str(req.SelectFilter)
	r.features = a.strs(req.FloatFeatureNames)
	r.cols = C.size_t(len(req.FloatFeatureNames))
	m, err := matrixOf(&a, req.UsageValues, len(req.FloatFeatureNames))
	if err != nil {
		return fail(err)
	}
	r.matrix = m
	r.rows = C.size_t(len(req.UsageValues))
	if n := len(req.SystemMetaDataFeatureNames); n > 0 {
		sv := (*C.estimator_system_value)(a.alloc(uintptr(n) * unsafe.Sizeof(C.estimator_system_value{})))
		view := unsafe.Slice(sv, n)
		for i := range view {
			view[i].name = a.cstr(req.SystemMetaDataFeatureNames[i])
			view[i].value = a.cstr(req.SystemMetaDataFeatureValues[i])
		}
		r.system_values = sv
		r.system_value_count = C.size_t(n)
	}

	var reply *C.estimator_reply
	var e C.estimator_error
	if err := fromC(C.estimator_estimate(c.c, &r, &reply, &e), &e); err != nil {
		return fail(err)
	}
	defer C.estimator_reply_destroy(reply)
	rows := int(C.estimator_reply_rows(reply))
	cols := int(C.estimator_reply_cols(reply))
	var powers []C.float
	if rows*cols > 0 {
		powers = unsafe.Slice(C.estimator_reply_powers(reply), rows*cols)
	}
	for j := 0; j < cols; j++ {
		col := make([]float64, rows)
		for i := 0; i < rows; i++ {
			col[i] = float64(powers[i*cols+j])
		}
		resp.Powers[C.GoString(C.estimator_reply_component(reply, C.size_t(j)))] = col
	}
	info := C.estimator_reply_model(reply)
	resp.CoreRatio = float64(info.core_ratio)
	resp.Model = ModelInfo{
		Name: C.GoString(info.name), Trainer: C.GoString(info.trainer),
		ModelClass: C.GoString(info.model_class), OutputType: C.GoString(info.output_type),
		Source: C.GoString(info.source), MAE: float64(info.mae), MAPE: float64(info.mape),
	}
	return resp, nil
}

// GetPower is the 2022 prototype's call on this client: one total power in watts per row
// of xValues (rows of len(xCols) numbers). The measured powers, one value per CPU package
// (nil when not measured), become the request's node power for components core, dram,
// gpu and other, which the ratio model splits among the rows. An empty modelName selects
// the smallest-error model that fits. A row's total is platform when the model gives it,
// else package (or core + uncore) + dram + gpu + other.
func (c *Client) GetPower(modelName string, xCols []string, xValues [][]float32,
	corePower, dramPower, gpuPower, otherPower []float32) ([]float32, error) {
	if c == nil || c.c == nil {
		return nil, invalid("the client is closed")
	}
	var a arena
	defer a.free()
	m, err := matrixOf(&a, xValues, len(xCols))
	if err != nil {
		return nil, err
	}
	var measured C.estimator_measured_power
	measured.core, measured.core_count = floatsOf(&a, corePower)
	measured.dram, measured.dram_count = floatsOf(&a, dramPower)
	measured.gpu, measured.gpu_count = floatsOf(&a, gpuPower)
	measured.other, measured.other_count = floatsOf(&a, otherPower)
	totals := make([]float64, len(xValues))
	var outp *C.double
	if len(totals) > 0 {
		// Go memory holding no Go pointers may be passed to C for the call's duration.
		outp = (*C.double)(unsafe.Pointer(&totals[0]))
	}
	var e C.estimator_error
	code := C.estimator_get_power(c.c, a.str(modelName), a.strs(xCols),
		C.size_t(len(xCols)), m, C.size_t(len(xValues)), &measured, outp, &e)
	if err := fromC(code, &e); err != nil {
		return nil, err
	}
	out := make([]float32, len(totals))
	for i, t := range totals {
		out[i] = float32(t)
	}
	return out, nil
}

var (
	defaultMu     sync.Mutex
	defaultClient *Client
)

// SetDefaultClient makes c the client of the package-level GetPower (nil: back to a
// client of the daemon's default segment, created on the next call).
func SetDefaultClient(c *Client) {
	defaultMu.Lock()
	defaultClient = c
	defaultMu.Unlock()
}

// GetPower is Kepler's 2022 GetPower, with its signature, through the default client
// (SetDefaultClient; otherwise a client of the daemon's default segment, created on
// first use). As Kepler's, it has no error result: a failure is logged (package log) and
// returns an empty slice; Client.GetPower returns the error instead.
func GetPower(modelName string, xCols []string, xValues [][]float32,
	corePower, dramPower, gpuPower, otherPower []float32) []float32 {
	defaultMu.Lock()
	if defaultClient == nil {
		c, err := NewClient(Options{})
		if err != nil {
			defaultMu.Unlock()
			log.Printf("estimator: %v", err)
			return []float32{}
		}
		defaultClient = c
	}
	c := defaultClient
	defaultMu.Unlock()
	powers, err := c.GetPower(modelName, xCols, xValues, corePower, dramPower, gpuPower, otherPower)
	if err != nil {
		log.Printf("estimator: %v", err)
		return []float32{}
	}
	return powers
}

func millis(d time.Duration) C.uint32_t {
	if d <= 0 {
		return 0
	}
	ms := (d + time.Millisecond - 1) / time.Millisecond
	if ms > math.MaxUint32 {
		ms = math.MaxUint32
	}
	return C.uint32_t(ms)
}

// arena holds the C memory of one call. The C structs may point only to C memory (cgo's
// rule: Go memory passed to C must not contain Go pointers), so strings, name arrays and
// the float32 matrix are built in C memory and freed together after the call.
type arena struct{ ptrs []unsafe.Pointer }

func (a *arena) alloc(n uintptr) unsafe.Pointer {
	if n == 0 {
		n = 1
	}
	p := C.calloc(1, C.size_t(n))
	if p == nil {
		panic("estimator: out of C memory")
	}
	a.ptrs = append(a.ptrs, p)
	return p
}

func (a *arena) free() {
	for _, p := range a.ptrs {
		C.free(p)
	}
	a.ptrs = nil
}

// str gives NULL for "" (the C interface's "not set").
func (a *arena) str(s string) *C.char {
	if s == "" {
		return nil
	}
	p := C.CString(s)
	a.ptrs = append(a.ptrs, unsafe.Pointer(p))
	return p
}

// cstr always gives a string, "" included.
func (a *arena) cstr(s string) *C.char {
	p := C.CString(s)
	a.ptrs = append(a.ptrs, unsafe.Pointer(p))
	return p
}

func (a *arena) strs(ss []string) **C.char {
	if len(ss) == 0 {
		return nil
	}
	arr := (**C.char)(a.alloc(uintptr(len(ss)) * unsafe.Sizeof((*C.char)(nil))))
	view := unsafe.Slice(arr, len(ss))
	for i, s := range ss {
		view[i] = a.cstr(s) // "" stays "": the daemon refuses it with a message
	}
	return arr
}

// number is what a matrix or a measured-power list may hold: Kepler's v0.9 rows are
// float64, its 2022 ones float32.
type number interface{ ~float32 | ~float64 }

func floatsOf[T number](a *arena, v []T) (*C.float, C.size_t) {
	if len(v) == 0 {
		return nil, 0
	}
	p := (*C.float)(a.alloc(uintptr(len(v)) * unsafe.Sizeof(C.float(0))))
	view := unsafe.Slice(p, len(v))
	for i, x := range v {
		view[i] = C.float(x)
	}
	return p, C.size_t(len(v))
}

// matrixOf flattens rows of cols numbers into float32, row-major (the daemon's format).
func matrixOf[T number](a *arena, values [][]T, cols int) (*C.float, error) {
	for i, row := range values {
		if len(row) != cols {
			return nil, invalid("values[%d] has %d numbers but metrics names %d", i, len(row), cols)
		}
	}
	n := len(values) * cols
	if n == 0 {
		return nil, nil
	}
	p := (*C.float)(a.alloc(uintptr(n) * unsafe.Sizeof(C.float(0))))
	view := unsafe.Slice(p, n)
	for i, row := range values {
		for j, x := range row {
			view[i*cols+j] = C.float(x)
		}
	}
	return p, nil
}
