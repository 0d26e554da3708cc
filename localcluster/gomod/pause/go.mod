// Wrapper module: pause, the sandbox image program (main.go here).
module dstj.local/localcluster/pause

go 1.26.0
