// SPDX-License-Identifier: Apache-2.0
module estimator/clients/go

go 1.19
