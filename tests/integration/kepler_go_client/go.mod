// SPDX-License-Identifier: Apache-2.0
module estimator/tests/kepler_go_client

go 1.19
