module estimator/clients/go

go 1.19
