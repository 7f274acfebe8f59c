module sluicebox.dev/sluicebox

go 1.27
