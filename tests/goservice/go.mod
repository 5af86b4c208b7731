module autopgo.test/goservice

go 1.24
