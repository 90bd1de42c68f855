module estimator/tests/kepler_go_client

go 1.19
