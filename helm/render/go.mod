module chatroom/helm/render

go 1.19
