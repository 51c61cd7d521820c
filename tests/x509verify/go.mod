module sentryrs/x509verify

go 1.22
