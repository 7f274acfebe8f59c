module sluicebox.dev/examples

go 1.27

require sluicebox.dev/sluicebox v0.0.0

replace sluicebox.dev/sluicebox => ../sluicebox
