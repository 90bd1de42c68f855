// SPDX-License-Identifier: Apache-2.0

package estimator

// Against a real estimatord started by StartEstimator: $ESTIMATORD must name the binary
// (ctest's go_client_test sets it, and the cgo paths); without it the tests fail rather
// than pass untested. Expected powers come from the embedded model's published weights
// (data/model), evaluated here with Kepler's formula.

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var bpf = []string{"bpf_cpu_time_ms", "bpf_page_cache_hit"}

type componentWeights struct {
	AllWeights struct {
		BiasWeight         float64 `json:"Bias_Weight"`
		NumericalVariables map[string]struct {
			Scale  float64 `json:"scale"`
			Weight float64 `json:"weight"`
		} `json:"Numerical_Variables"`
	} `json:"All_Weights"`
}

// keplerPower evaluates the embedded rapl AbsPower model's weights for one component.
func keplerPower(t *testing.T, component string, row []float64) float64 {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "data", "model", "rapl-sysfs", "AbsPower",
		"SGDRegressorTrainer_0", "weights.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]json.RawMessage // components, and model_name (a string)
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	var w componentWeights
	if err := json.Unmarshal(doc[component], &w); err != nil {
		t.Fatalf("weights of %s: %v", component, err)
	}
	p := w.AllWeights.BiasWeight
	for i, name := range bpf {
		v := w.AllWeights.NumericalVariables[name]
		if v.Scale != 0 {
			p += v.Weight * row[i] / v.Scale
		}
	}
	return math.Max(p, 0)
}

// needDaemon fails the test when no estimatord binary is given.
func needDaemon(t *testing.T) {
	t.Helper()
	if os.Getenv("ESTIMATORD") == "" {
		t.Fatal("ESTIMATORD is not set: set it to the estimatord binary " +
			"(ctest's go_client_test does: ctest -R go_client_test)")
	}
}

func start(t *testing.T) *Estimator {
	t.Helper()
	needDaemon(t)
	e, err := StartEstimator(EstimatorOptions{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("StartEstimator: %v", err)
	}
	t.Cleanup(func() {
		if _, err := e.Destroy(); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	})
	return e
}

func near(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-5*math.Max(1, math.Abs(want)) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func TestEstimateAnswersAsKeplersSidecar(t *testing.T) {
	e := start(t)
	values := [][]float64{{1200, 3}, {80, 0}, {0, 0}}
	resp, err := e.Estimate(&PowerRequest{FloatFeatureNames: bpf, UsageValues: values,
		OutputType: "AbsPower", EnergySource: "intel_rapl"})
	if err != nil {
		t.Fatalf("Estimate: %v", err)
	}
	if resp.Message != "" || resp.CoreRatio != 1 {
		t.Errorf("msg %q core_ratio %v", resp.Message, resp.CoreRatio)
	}
	if resp.Model.Name != "SGDRegressorTrainer_0" || resp.Model.Source != "rapl-sysfs" {
		t.Errorf("model %+v", resp.Model)
	}
	for _, comp := range []string{"package", "core", "uncore", "dram"} {
		col, ok := resp.Powers[comp]
		if !ok || len(col) != len(values) {
			t.Fatalf("powers[%s] = %v", comp, col)
		}
		for r, row := range values {
			near(t, comp, col[r], keplerPower(t, comp, row))
		}
	}
	// Kepler's reply shape survives JSON, read back with Kepler v0.9's field types and tags.
	b, _ := json.Marshal(resp)
	var back struct {
		Powers    map[string][]float64 `json:"powers"`
		Message   string               `json:"msg"`
		CoreRatio float64              `json:"core_ratio,omitempty"`
	}
	if err := json.Unmarshal(b, &back); err != nil || len(back.Powers["package"]) != 3 || back.CoreRatio != 1 {
		t.Errorf("json round trip: %s (%v)", b, err)
	}
}

// The request marshals to the keys Kepler v0.9 sends (KEPLER.md section 4), every one
// present, and no model_name unless one is set.
func TestPowerRequestHasKeplersJSONKeys(t *testing.T) {
	b, err := json.Marshal(PowerRequest{FloatFeatureNames: bpf, UsageValues: [][]float64{{1, 2}}})
	if err != nil {
		t.Fatal(err)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		t.Fatal(err)
	}
	want := []string{"metrics", "values", "output_type", "source", "system_features",
		"system_values", "trainer_name", "filter"}
	if len(keys) != len(want) {
		t.Errorf("keys of %s, want exactly %v", b, want)
	}
	for _, k := range want {
		if _, ok := keys[k]; !ok {
			t.Errorf("no %q in %s", k, b)
		}
	}
}

func TestEstimateAcpiWithSystemValues(t *testing.T) {
	e := start(t)
	resp, err := e.Estimate(&PowerRequest{FloatFeatureNames: bpf, UsageValues: [][]float64{{500, 1}},
		OutputType: "AbsPower", EnergySource: "acpi",
		SystemMetaDataFeatureNames:  []string{"cpu_architecture"},
		SystemMetaDataFeatureValues: []string{"Sky Lake"}})
	if err != nil {
		t.Fatalf("Estimate: %v", err)
	}
	if len(resp.Powers) != 1 || len(resp.Powers["platform"]) != 1 {
		t.Errorf("powers %v", resp.Powers)
	}
}

func TestGetPowerIsPackagePlusDram(t *testing.T) {
	e := start(t)
	values := [][]float32{{1200, 3}, {80, 0}}
	got, err := e.GetPower("", bpf, values, nil, nil, nil, nil)
	if err != nil {
		t.Fatalf("GetPower: %v", err)
	}
	if len(got) != 2 {
		t.Fatalf("got %v", got)
	}
	for r, row := range values {
		near(t, "total", float64(got[r]),
			keplerPower(t, "package", float64s(row))+keplerPower(t, "dram", float64s(row)))
	}
}

func float64s(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func TestGetPowerSplitsMeasuredPowerWithTheRatioModel(t *testing.T) {
	e := start(t)
	features := []string{"cpu_instructions", "cache_miss", "bpf_cpu_time_ms"}
	values := [][]float32{{300, 10, 5}, {100, 30, 15}}
	// Only dram is measured (8 W on one package): split by cache misses, 10 : 30.
	got, err := e.GetPower("Ratio", features, values, nil, []float32{8}, nil, nil)
	if err != nil {
		t.Fatalf("GetPower: %v", err)
	}
	near(t, "row 0", float64(got[0]), 2)
	near(t, "row 1", float64(got[1]), 6)
}

// Kepler's 2022 call, package-level with its exact signature, as Kepler's code calls it.
func TestPackageGetPowerIsKeplers2022Call(t *testing.T) {
	e := start(t)
	var keplers func(string, []string, [][]float32, []float32, []float32, []float32, []float32) []float32 = GetPower
	SetDefaultClient(e.Client)
	defer SetDefaultClient(nil)
	values := [][]float32{{1200, 3}, {80, 0}, {0, 0}}
	got := keplers("", bpf, values, nil, nil, nil, nil)
	want, err := e.GetPower("", bpf, values, nil, nil, nil, nil)
	if err != nil || len(got) != 3 || len(want) != 3 {
		t.Fatalf("GetPower = %v, Client.GetPower = %v, %v", got, want, err)
	}
	for r := range got {
		if got[r] != want[r] {
			t.Errorf("row %d: %v, want %v", r, got[r], want[r])
		}
	}
	// A failure is an empty slice (and a log line), as Kepler's was.
	if got := GetPower("NoSuchModel", bpf, values, nil, nil, nil, nil); got == nil || len(got) != 0 {
		t.Errorf("on failure: %v, want an empty slice", got)
	}
}

func TestErrorsCarryCodeAndMessage(t *testing.T) {
	e := start(t)
	resp, err := e.Estimate(&PowerRequest{ModelName: "SGDRegressorTrainer_0",
		FloatFeatureNames: []string{"cpu_cycles"}, UsageValues: [][]float64{{1}},
		OutputType: "AbsPower", EnergySource: "rapl-sysfs"})
	var ee *Error
	if !errors.As(err, &ee) || ee.Code != CodeMissingFeatures {
		t.Fatalf("err = %v, want missing_features", err)
	}
	if resp == nil || resp.Message == "" || resp.Powers == nil {
		t.Errorf("response on error: %+v (Message set, Powers an empty map)", resp)
	}
	if ee.Code.String() != "missing_features" || !strings.Contains(ee.Message, "bpf_cpu_time_ms") {
		t.Errorf("error %q", ee.Error())
	}

	_, err = e.GetPower("", bpf, [][]float32{{1, 2}, {3}}, nil, nil, nil, nil)
	if !errors.As(err, &ee) || ee.Code != CodeInvalidArgument || !strings.Contains(ee.Message, "values[1]") {
		t.Errorf("ragged rows: %v", err)
	}
	_, err = e.Estimate(&PowerRequest{FloatFeatureNames: bpf, UsageValues: [][]float64{{1, 2}},
		SystemMetaDataFeatureNames: []string{"cpu_architecture"}})
	if !errors.As(err, &ee) || ee.Code != CodeInvalidArgument {
		t.Errorf("system features without values: %v", err)
	}
	_, err = e.GetPower("", bpf, [][]float32{{float32(math.NaN()), 2}}, nil, nil, nil, nil)
	if !errors.As(err, &ee) || ee.Code != CodeInvalidValue {
		t.Errorf("NaN: %v", err)
	}

	nobody, err := NewClient(Options{ShmName: "estimator-go-nobody", Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer nobody.Close()
	if err := nobody.Ping(0); !errors.As(err, &ee) || ee.Code != CodeUnavailable {
		t.Errorf("no daemon: %v", err)
	}
}

func TestStartEstimatorFailuresAndDestroy(t *testing.T) {
	needDaemon(t)
	var ee *Error
	if _, err := StartEstimator(EstimatorOptions{Binary: "/nonexistent/estimatord"}); !errors.As(err, &ee) || ee.Code != CodeNotFound {
		t.Errorf("missing binary: %v", err)
	}
	if _, err := StartEstimator(EstimatorOptions{ExtraArgs: []string{"--model-dir", "/nonexistent"}, LogLevel: "off"}); !errors.As(err, &ee) || !strings.Contains(ee.Message, "exited with status 2") {
		t.Errorf("daemon refusing its arguments: %v", err)
	}

	e, err := StartEstimator(EstimatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	name := e.ShmName()
	if _, err := os.Stat("/dev/shm/" + name); err != nil {
		t.Errorf("segment: %v", err)
	}
	if e.Pid() <= 0 {
		t.Errorf("pid %d", e.Pid())
	}
	status, err := e.Destroy()
	if err != nil || status != 0 {
		t.Errorf("Destroy: status %d, %v", status, err)
	}
	if _, err := os.Stat("/dev/shm/" + name); !os.IsNotExist(err) {
		t.Errorf("segment left after Destroy: %v", err)
	}
	if _, err := e.Destroy(); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
}
